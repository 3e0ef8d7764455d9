//! Session tokens: the short-lived credential the session's terminal page
//! holds (in memory, never in a URL). A token names one session; whoever
//! holds it may open that session's terminal until it expires, and nothing
//! else. It is renewed over the socket, only to the page attached with it.
//!
//! A launch never hands a browser a token: its redirect carries a one-time
//! *code* ([`SessionTokens::issue_code`], ~60 s, in the URL's fragment, so no
//! server or proxy sees it), which the page trades for a token in its
//! socket's first message; the store records each code used
//! (`Store::redeem_code`), so a code works once, on any replica. A waiting
//! page gets a *wait pass* ([`SessionTokens::wait_pass`]) the same way: only
//! the browser the launch redirected holds it, and only it may poll.
//!
//! HS256 with a key generated on first start and kept in the store, sealed
//! with the secret key (`crate::secret_key`), so any replica can check a
//! token another issued and a copy of the database alone forges nothing.
//! (The algorithm is fixed here; a token cannot choose it, nor a lifetime
//! longer than labpool issues.) Tokens, codes and passes have audiences of
//! their own: none is accepted as another.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// How long a token from a launch is good for: long enough to load the page
/// and open its socket; a relaunch from the LMS issues a new one.
pub const TOKEN_TTL_SECS: i64 = 300;
const AUDIENCE: &str = "labpool-session";
/// How far ahead of this replica's clock another replica's may be: a token
/// issued (`iat`) further in the future is refused, since it would stretch
/// a token's life past [`TOKEN_TTL_SECS`].
const CLOCK_SKEW_SECS: i64 = 60;
/// The longest-lived state labpool seals (the dashboard's login, 12 h):
/// [`SessionTokens::unseal`] refuses anything that lives longer.
pub const SEALED_MAX_SECS: i64 = 12 * 3600;
/// How long a launch's one-time code may wait to be traded for a token:
/// a redirect and a page load, with room for a slow network.
pub const CODE_TTL_SECS: i64 = 60;
const CODE_AUDIENCE: &str = "labpool-code";
/// How long a waiting page may poll with the pass its launch gave it
/// (longer than any boot; the ticket lapses sooner when nobody polls).
pub const WAIT_PASS_TTL_SECS: i64 = 3600;
const WAIT_AUDIENCE: &str = "labpool-wait";

/// What a one-time code says: the session it opens, until when, and a
/// random id the store records when the code is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeClaims {
    pub sid: String,
    pub exp: i64,
    pub aud: String,
    pub jti: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WaitClaims {
    ticket: String,
    exp: i64,
    aud: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// The session this token opens.
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
    pub aud: String,
    /// Random: two tokens for one session are never equal.
    pub jti: String,
    /// When it was issued, unix milliseconds: orders the tokens of one
    /// session finer than `iat` (see [`SessionClaims::issued_ms`]).
    #[serde(default)]
    pub iat_ms: i64,
}

impl SessionClaims {
    /// When the token was issued, unix ms (from `iat` for a token without
    /// `iat_ms`).
    pub fn issued_ms(&self) -> i64 {
        if self.iat_ms > 0 {
            self.iat_ms
        } else {
            self.iat * 1000
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no token")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not one labpool signed")]
    Forged,
    #[error("the token is for another session")]
    OtherSession,
    /// Signed by labpool's key, but not as labpool issues tokens (a token
    /// minted with a stolen key, say): the reason says what is wrong.
    #[error("the token's lifetime is not one labpool issues: {0}")]
    Lifetime(&'static str),
    #[error("this code was already used")]
    Spent,
}

#[derive(Clone)]
pub struct SessionTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for SessionTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionTokens(***)")
    }
}

impl SessionTokens {
    /// The store's token key, created on first use.
    pub async fn load_or_create(store: &Store, now_ms: i64) -> Result<SessionTokens, StoreError> {
        let secret = store
            .secret(
                "session-token-key",
                || hex::encode(rand::random::<[u8; 32]>()),
                now_ms,
            )
            .await?;
        Ok(SessionTokens::from_secret(secret.as_bytes()))
    }

    pub fn from_secret(secret: &[u8]) -> SessionTokens {
        SessionTokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// A token for `session_id`, valid from `now` (unix seconds).
    pub fn issue(&self, session_id: &str, now: i64) -> String {
        self.issue_at_ms(session_id, now * 1000)
    }

    /// A token for `session_id`, valid from `now_ms` (unix milliseconds).
    pub fn issue_at_ms(&self, session_id: &str, now_ms: i64) -> String {
        let now = now_ms.div_euclid(1000);
        let claims = SessionClaims {
            sid: session_id.to_owned(),
            iat: now,
            exp: now + TOKEN_TTL_SECS,
            aud: AUDIENCE.to_owned(),
            jti: format!("{:016x}", rand::random::<u64>()),
            iat_ms: now_ms,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// A one-time code for `session_id`, good for [`CODE_TTL_SECS`] from
    /// `now` (unix seconds). Single use is the store's part
    /// (`Store::redeem_code` on [`code_id`]).
    pub fn issue_code(&self, session_id: &str, now: i64) -> String {
        self.seal(&CodeClaims {
            sid: session_id.to_owned(),
            exp: now + CODE_TTL_SECS,
            aud: CODE_AUDIENCE.to_owned(),
            jti: hex::encode(rand::random::<[u8; 16]>()),
        })
    }

    /// Checks that `code` is one labpool signed, live at `now` and for
    /// `session_id`. Whether it was used already is the store's to say.
    pub fn open_code(
        &self,
        code: &str,
        session_id: &str,
        now: i64,
    ) -> Result<CodeClaims, TokenError> {
        if code.is_empty() {
            return Err(TokenError::Missing);
        }
        let claims: CodeClaims = self.unseal(code, CODE_AUDIENCE, now)?;
        if claims.exp - now > CODE_TTL_SECS {
            // Longer than labpool issues: not ours to honour.
            return Err(TokenError::Forged);
        }
        if claims.sid != session_id {
            return Err(TokenError::OtherSession);
        }
        Ok(claims)
    }

    /// The pass a launch's waiting page polls ticket `ticket` with.
    pub fn wait_pass(&self, ticket: &str, now: i64) -> String {
        self.seal(&WaitClaims {
            ticket: ticket.to_owned(),
            exp: now + WAIT_PASS_TTL_SECS,
            aud: WAIT_AUDIENCE.to_owned(),
        })
    }

    /// Checks a waiting page's pass for `ticket`.
    pub fn check_wait_pass(
        &self,
        pass: Option<&str>,
        ticket: &str,
        now: i64,
    ) -> Result<(), TokenError> {
        let pass = pass.filter(|p| !p.is_empty()).ok_or(TokenError::Missing)?;
        let claims: WaitClaims = self.unseal(pass, WAIT_AUDIENCE, now)?;
        if claims.ticket != ticket {
            return Err(TokenError::OtherSession);
        }
        Ok(())
    }

    /// Signs `claims` (which must carry `exp`) for audience `aud`: short-lived
    /// state labpool hands a browser and wants back unchanged.
    pub fn seal<T: Serialize>(&self, claims: &T) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// Opens what [`SessionTokens::seal`] signed for `aud`, if live at `now`.
    pub fn unseal<T: for<'de> Deserialize<'de>>(
        &self,
        token: &str,
        aud: &str,
        now: i64,
    ) -> Result<T, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[aud]);
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "aud"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &self.decoding, &validation)
            .map_err(|_| TokenError::Forged)?;
        let exp = data
            .claims
            .get("exp")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        if exp <= now {
            return Err(TokenError::Expired);
        }
        // Nothing labpool seals lives longer: a far `exp` is not ours.
        if exp - now > SEALED_MAX_SECS {
            return Err(TokenError::Lifetime(
                "it expires later than labpool's seals do",
            ));
        }
        serde_json::from_value(data.claims).map_err(|_| TokenError::Forged)
    }

    /// Checks that `token` is ours, live at `now` (unix seconds) and names
    /// `session_id`.
    pub fn verify(
        &self,
        token: Option<&str>,
        session_id: &str,
        now: i64,
    ) -> Result<SessionClaims, TokenError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(TokenError::Missing)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.leeway = 0;
        // Expiry is checked below against the caller's clock.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "aud"]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(token, &self.decoding, &validation)
            .map_err(|_| TokenError::Forged)?
            .claims;
        if claims
            .get("iat")
            .and_then(serde_json::Value::as_i64)
            .is_none()
        {
            return Err(TokenError::Lifetime("it has no iat (issued at)"));
        }
        let claims: SessionClaims =
            serde_json::from_value(claims).map_err(|_| TokenError::Forged)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        // labpool issues tokens that live TOKEN_TTL_SECS from now: a longer
        // one, or one issued in the future, was not made by `issue`.
        if claims.exp - claims.iat > TOKEN_TTL_SECS {
            return Err(TokenError::Lifetime(
                "it lives longer than the tokens labpool issues",
            ));
        }
        if claims.iat > now + CLOCK_SKEW_SECS {
            return Err(TokenError::Lifetime("it was issued in the future"));
        }
        if claims.sid != session_id {
            return Err(TokenError::OtherSession);
        }
        Ok(claims)
    }
}

/// What the store keeps of a used code: its SHA-256 (a dump of the store
/// holds nothing a browser could present).
pub fn code_id(code: &CodeClaims) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(format!("{}:{}", code.sid, code.jti)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_opens_its_session_only_within_a_minute_and_is_no_token() {
        let tokens = SessionTokens::from_secret(b"k1");
        let code = tokens.issue_code("s1", 1000);
        let claims = tokens.open_code(&code, "s1", 1001).unwrap();
        assert_eq!(claims.sid, "s1");
        assert_eq!(
            tokens.open_code(&code, "s2", 1001),
            Err(TokenError::OtherSession)
        );
        assert_eq!(
            tokens.open_code(&code, "s1", 1000 + CODE_TTL_SECS),
            Err(TokenError::Expired)
        );
        // A code is not a token, nor a token a code.
        assert_eq!(
            tokens.verify(Some(&code), "s1", 1001),
            Err(TokenError::Forged)
        );
        let token = tokens.issue("s1", 1000);
        assert_eq!(
            tokens.open_code(&token, "s1", 1001),
            Err(TokenError::Forged)
        );
        // Two codes are never the same, nor recorded the same.
        let again = tokens.open_code(&tokens.issue_code("s1", 1000), "s1", 1001);
        assert_ne!(code_id(&claims), code_id(&again.unwrap()));
    }

    #[test]
    fn a_wait_pass_polls_its_ticket_only() {
        let tokens = SessionTokens::from_secret(b"k1");
        let pass = tokens.wait_pass("t1", 1000);
        assert_eq!(tokens.check_wait_pass(Some(&pass), "t1", 1001), Ok(()));
        assert_eq!(
            tokens.check_wait_pass(Some(&pass), "t2", 1001),
            Err(TokenError::OtherSession)
        );
        assert_eq!(
            tokens.check_wait_pass(None, "t1", 1001),
            Err(TokenError::Missing)
        );
        let code = tokens.issue_code("t1", 1000);
        assert_eq!(
            tokens.check_wait_pass(Some(&code), "t1", 1001),
            Err(TokenError::Forged)
        );
    }

    #[test]
    fn a_token_opens_its_session_only_until_it_expires() {
        let tokens = SessionTokens::from_secret(b"k1");
        let t = tokens.issue("s1", 1000);
        assert_eq!(tokens.verify(Some(&t), "s1", 1001).unwrap().sid, "s1");
        assert_eq!(
            tokens.verify(Some(&t), "s2", 1001),
            Err(TokenError::OtherSession)
        );
        assert_eq!(
            tokens.verify(Some(&t), "s1", 1000 + TOKEN_TTL_SECS),
            Err(TokenError::Expired)
        );
        assert_eq!(tokens.verify(None, "s1", 1001), Err(TokenError::Missing));
        let other = SessionTokens::from_secret(b"k2").issue("s1", 1000);
        assert_eq!(
            tokens.verify(Some(&other), "s1", 1001),
            Err(TokenError::Forged)
        );
        // Re-signed with alg none: refused, the algorithm is not the token's.
        let mut parts: Vec<&str> = t.split('.').collect();
        parts[0] = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        parts[2] = "";
        assert_eq!(
            tokens.verify(Some(&parts.join(".")), "s1", 1001),
            Err(TokenError::Forged)
        );
    }

    /// Issue 15 §1: a token with `exp` a year ahead, signed with labpool's
    /// key (as one made with the key read from a 0644 store was), was
    /// accepted. Its lifetime is now refused, as are a missing `iat` and an
    /// `iat` in the future.
    #[test]
    fn a_token_that_lives_longer_than_labpool_issues_is_refused() {
        let tokens = SessionTokens::from_secret(b"k1");
        let now = 1_000_000;
        let year = 365 * 24 * 3600;
        let forge = |claims: serde_json::Value| tokens.seal(&claims);
        let claims = |iat: Option<i64>, exp: i64| {
            let mut c = serde_json::json!({"sid": "s1", "exp": exp, "aud": AUDIENCE, "jti": "x"});
            if let Some(iat) = iat {
                c["iat"] = iat.into();
            }
            c
        };
        let year_long = forge(claims(Some(now), now + year));
        assert_eq!(
            tokens.verify(Some(&year_long), "s1", now + 1),
            Err(TokenError::Lifetime(
                "it lives longer than the tokens labpool issues"
            ))
        );
        let no_iat = forge(claims(None, now + 60));
        assert_eq!(
            tokens.verify(Some(&no_iat), "s1", now + 1),
            Err(TokenError::Lifetime("it has no iat (issued at)"))
        );
        let future = forge(claims(Some(now + year), now + year + 60));
        assert_eq!(
            tokens.verify(Some(&future), "s1", now + 1),
            Err(TokenError::Lifetime("it was issued in the future"))
        );
        // Exactly what `issue` makes still opens the session.
        let issued = forge(claims(Some(now), now + TOKEN_TTL_SECS));
        assert!(tokens.verify(Some(&issued), "s1", now + 1).is_ok());
        // Sealed state (the dashboard cookie) is capped the same way.
        let sealed = forge(serde_json::json!({"exp": now + year, "aud": "labpool-dashboard"}));
        assert_eq!(
            tokens.unseal::<serde_json::Value>(&sealed, "labpool-dashboard", now),
            Err(TokenError::Lifetime(
                "it expires later than labpool's seals do"
            ))
        );
    }
}
