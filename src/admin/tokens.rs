//! Admin API tokens: made by `labpool token create`, shown once, stored as
//! their SHA-256, revocable, scoped.
//!
//! A token is `lpt_` followed by 32 random bytes in unpadded base64url. It is
//! random, not chosen by a person, so a fast hash is enough: there is nothing
//! to guess, and a stolen database gives no token.

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::store::{ApiTokenRow, Store, StoreError};

/// The prefix of every admin token: secret scanners and people can tell what
/// a leaked string is.
pub const PREFIX: &str = "lpt_";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Look: every GET of the API and the dashboard.
    Read,
    /// Look and act: end and reset sessions, drain hosts, resync.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// Who is asking: a token that checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    /// The token's name, for logs and the dashboard ("ended by …").
    pub name: String,
    pub scope: Scope,
    /// A read token made with `--course`: the only courses it sees. None:
    /// every course.
    pub courses: Option<Vec<String>>,
}

impl Principal {
    pub fn may(&self, needed: Scope) -> bool {
        self.scope >= needed
    }

    /// Whether the token may see `course` (its VMs, sessions, events).
    pub fn sees(&self, course: &str) -> bool {
        self.courses
            .as_ref()
            .is_none_or(|c| c.iter().any(|n| n == course))
    }

    /// Whether the token sees only some courses: it then sees nothing that
    /// is not a course's (hosts, the source, events of no course).
    pub fn is_scoped(&self) -> bool {
        self.courses.is_some()
    }
}

/// Why a token was refused. The reason goes to the log; the client only
/// hears 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("not a labpool token")]
    Malformed,
    #[error("unknown token")]
    Unknown,
    #[error("token `{0}` was revoked")]
    Revoked(String),
    #[error("the store cannot be read")]
    Store,
}

/// The stored form of `token`.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Makes a token named `name` with `scope`: returns its row and the token,
/// which exists nowhere else afterwards.
pub async fn create(
    store: &Store,
    name: &str,
    scope: Scope,
    now: i64,
) -> Result<(ApiTokenRow, String), StoreError> {
    create_scoped(store, name, scope, None, now).await
}

/// [`create`], for a token that sees only `courses` (when given; the
/// caller allows that for read tokens only: acting is never per course).
pub async fn create_scoped(
    store: &Store,
    name: &str,
    scope: Scope,
    courses: Option<&[String]>,
    now: i64,
) -> Result<(ApiTokenRow, String), StoreError> {
    let secret = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    );
    let row = ApiTokenRow {
        id: format!("{:016x}", rand::random::<u64>()),
        name: name.to_owned(),
        scope: scope.as_str().to_owned(),
        token_sha256: hash(&secret),
        created_at: now,
        last_used_at: None,
        revoked_at: None,
        courses: courses.map(|c| serde_json::to_string(c).expect("names serialize")),
    };
    store.insert_api_token(&row).await?;
    Ok((row, secret))
}

/// Checks a presented token. The lookup is by hash, so the comparison never
/// touches the secret itself.
pub async fn authenticate(
    store: &Store,
    presented: Option<&str>,
    now: i64,
) -> Result<Principal, AuthError> {
    let token = presented
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::Missing)?;
    if !token.starts_with(PREFIX) || token.len() > 128 {
        return Err(AuthError::Malformed);
    }
    let row = store
        .api_token_by_hash(&hash(token))
        .await
        .map_err(|_| AuthError::Store)?
        .ok_or(AuthError::Unknown)?;
    principal_of(store, row, now).await
}

/// The principal of token `id` (a dashboard cookie names its token by id, so
/// revoking the token ends the dashboard login too).
pub async fn by_id(store: &Store, id: &str, now: i64) -> Result<Principal, AuthError> {
    let row = store
        .api_token(id)
        .await
        .map_err(|_| AuthError::Store)?
        .ok_or(AuthError::Unknown)?;
    principal_of(store, row, now).await
}

async fn principal_of(store: &Store, row: ApiTokenRow, now: i64) -> Result<Principal, AuthError> {
    if row.revoked_at.is_some() {
        return Err(AuthError::Revoked(row.name));
    }
    let scope = Scope::parse(&row.scope).ok_or(AuthError::Unknown)?;
    let courses = row.course_scope();
    // Best effort: a failed write must not refuse a valid token.
    let _ = store.touch_api_token(&row.id, now).await;
    Ok(Principal {
        token_id: row.id,
        name: row.name,
        scope,
        courses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_sha256_hex_and_hides_the_token() {
        let h = hash("lpt_abc");
        assert_eq!(h.len(), 64);
        assert!(!h.contains("abc"));
        assert_eq!(h, hash("lpt_abc"));
        assert_ne!(h, hash("lpt_abd"));
    }

    #[test]
    fn admin_may_read_and_read_may_not_act() {
        let p = |scope| Principal {
            token_id: "t".into(),
            name: "n".into(),
            scope,
            courses: None,
        };
        assert!(p(Scope::Admin).may(Scope::Read));
        assert!(p(Scope::Admin).may(Scope::Admin));
        assert!(p(Scope::Read).may(Scope::Read));
        assert!(!p(Scope::Read).may(Scope::Admin));
    }
}
