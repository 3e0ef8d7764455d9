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
//!
//! A captured delivery can be sent again (GitHub's signature covers the body
//! only, a token covers nothing). So a delivery seen before (by its id, or
//! by its signed body) is answered 200 and fetches nothing, and accepted
//! deliveries only ask the reconciler for a fetch, which folds requests
//! within `source.git.webhook_min_interval` into one (`request_fetch`).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

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

/// The headers forges put a delivery's unique id in: GitHub, GitLab, Gitea,
/// Gogs, Bitbucket Cloud and Server, and a generic one for bearer senders.
const DELIVERY_HEADERS: &[&str] = &[
    "x-github-delivery",
    "x-gitlab-event-uuid",
    "x-gitea-delivery",
    "x-gogs-delivery",
    "x-hook-uuid",
    "x-request-uuid",
    "x-request-id",
];

/// How many recent deliveries are remembered: far more than a forge sends
/// between two fetches; the oldest is forgotten first.
const REMEMBERED: usize = 4096;

/// Recently accepted deliveries, by id and by signed body.
#[derive(Default)]
pub struct Deliveries {
    seen: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl Deliveries {
    /// Records the keys of a delivery; false if any was seen before.
    fn first_time(&self, keys: &[String]) -> bool {
        let mut guard = self.seen.lock().expect("deliveries");
        let (set, order) = &mut *guard;
        if keys.iter().any(|k| set.contains(k)) {
            return false;
        }
        for k in keys {
            set.insert(k.clone());
            order.push_back(k.clone());
        }
        while order.len() > REMEMBERED {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        true
    }
}

/// What identifies a delivery: its id header, and for a signed body the
/// body itself (an id header is not signed, so a replay may change it).
fn delivery_keys(headers: &HeaderMap, body: &[u8], kind: &str) -> Vec<String> {
    use sha2::Digest;
    let mut keys: Vec<String> = DELIVERY_HEADERS
        .iter()
        .filter_map(|name| {
            let v = headers.get(*name)?.to_str().ok()?.trim();
            (!v.is_empty() && v.len() <= 200).then(|| format!("{name}:{v}"))
        })
        .collect();
    if kind == "github" {
        keys.push(format!("body:{}", hex::encode(sha2::Sha256::digest(body))));
    }
    keys
}

pub async fn receive(
    State(reconciler): State<Reconciler>,
    State(deliveries): State<Arc<Deliveries>>,
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
            if !deliveries.first_time(&delivery_keys(&headers, &body, kind)) {
                tracing::warn!(
                    kind,
                    "webhook: a delivery seen before (a replay or a redelivery); not fetching again"
                );
                return (StatusCode::OK, "already received\n");
            }
            let due = reconciler.request_fetch();
            let wait = due - crate::reconcile::now_ms();
            if wait > 0 {
                tracing::info!(kind, in_ms = wait, "webhook: folded into the next fetch");
            } else {
                tracing::info!(kind, "webhook: fetching the course repository now");
            }
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
