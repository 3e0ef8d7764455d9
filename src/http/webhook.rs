//! `POST /hooks/git`: a push to the course repository makes labpool fetch at
//! once instead of at the next interval. Three ways to prove the call comes
//! from the forge, all against `source.git.webhook_secret`:
//! - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`;
//! - GitLab: `X-Gitlab-Token: <secret>`;
//! - anything else: `Authorization: Bearer <secret>`.
//!
//! A request that proves nothing gets 401 and fetches nothing; the reason is
//! logged, the secret and the signature are not. Comparisons are constant
//! time. The body is not trusted for anything but the signature: the fetch
//! reads the remote itself.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;

use crate::reconcile::Reconciler;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Why a webhook call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoCredentials,
    BadSignature,
    BadToken,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::NoCredentials => "no signature or token",
            Refusal::BadSignature => "X-Hub-Signature-256 does not match the body",
            Refusal::BadToken => "the token does not match",
        }
    }
}

/// The `X-Hub-Signature-256` value GitHub sends for `body` under `secret`
/// (for senders and tests; checking uses the constant-time `verify`).
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a call's credentials against `secret`; returns which kind proved it.
pub fn verify(headers: &HeaderMap, body: &[u8], secret: &str) -> Result<&'static str, Refusal> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(signature) = header("x-hub-signature-256") {
        let hex_sig = signature
            .strip_prefix("sha256=")
            .ok_or(Refusal::BadSignature)?;
        let given = hex::decode(hex_sig).map_err(|_| Refusal::BadSignature)?;
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
        mac.update(body);
        return mac
            .verify_slice(&given)
            .map(|()| "github")
            .map_err(|_| Refusal::BadSignature);
    }
    let token = header("x-gitlab-token").map(|t| ("gitlab", t)).or_else(|| {
        header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(|t| ("bearer", t))
    });
    match token {
        Some((kind, token)) if bool::from(token.as_bytes().ct_eq(secret.as_bytes())) => Ok(kind),
        Some(_) => Err(Refusal::BadToken),
        None => Err(Refusal::NoCredentials),
    }
}

pub async fn receive(
    State(reconciler): State<Reconciler>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let secret = reconciler
        .config()
        .source
        .git
        .as_ref()
        .and_then(|g| g.webhook_secret.as_ref());
    let Some(secret) = secret else {
        return (StatusCode::NOT_FOUND, "no webhook is configured\n");
    };
    match verify(&headers, &body, secret.expose()) {
        Ok(kind) => {
            tracing::info!(kind, "webhook: fetching the course repository now");
            reconciler.fetch_now();
            (StatusCode::ACCEPTED, "fetching\n")
        }
        Err(refusal) => {
            tracing::warn!(reason = refusal.reason(), "webhook refused");
            (StatusCode::UNAUTHORIZED, "unauthorized\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn github_gitlab_and_bearer_credentials() {
        let body = b"{\"ref\":\"refs/heads/main\"}";
        let good = github_signature("s3cret", body);
        assert_eq!(
            verify(&headers(&[("x-hub-signature-256", &good)]), body, "s3cret"),
            Ok("github")
        );
        assert_eq!(
            verify(
                &headers(&[("x-hub-signature-256", &good)]),
                b"tampered",
                "s3cret"
            ),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            verify(
                &headers(&[("x-hub-signature-256", "sha256=zz")]),
                body,
                "s3cret"
            ),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            verify(&headers(&[("x-gitlab-token", "s3cret")]), body, "s3cret"),
            Ok("gitlab")
        );
        assert_eq!(
            verify(&headers(&[("x-gitlab-token", "nope")]), body, "s3cret"),
            Err(Refusal::BadToken)
        );
        assert_eq!(
            verify(
                &headers(&[("authorization", "Bearer s3cret")]),
                body,
                "s3cret"
            ),
            Ok("bearer")
        );
        assert_eq!(
            verify(&headers(&[]), body, "s3cret"),
            Err(Refusal::NoCredentials)
        );
    }
}
