//! The tool's own RS256 keys: generated on first start, kept in the store
//! (so replicas sign with the same key), rotated by `labpool keys rotate`.
//! A rotated-out key stays in the JWKS for the grace period, because
//! platforms cache JWKS documents and must still verify what it signed.

use std::sync::Arc;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey};

use crate::store::{Store, StoreError, ToolKeyRow};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    SecretKey(#[from] crate::secret_key::SecretKeyError),
    #[error("cannot generate an RSA key")]
    Generate,
    #[error("stored tool key `{kid}` is unusable: {reason}")]
    Corrupt { kid: String, reason: String },
}

/// One tool key, ready to sign and to publish.
#[derive(Clone)]
pub struct ToolKey {
    pub kid: String,
    pub encoding: EncodingKey,
    pub jwk: Jwk,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

/// The tool's keys as the store has them, newest first.
#[derive(Clone)]
pub struct ToolKeys {
    keys: Arc<Vec<ToolKey>>,
}

impl ToolKeys {
    /// Loads the keys, creating the first one if there is none.
    pub async fn load_or_create(store: &Store, now: i64) -> Result<ToolKeys, KeyError> {
        if !store
            .tool_keys()
            .await?
            .iter()
            .any(|k| k.retired_at.is_none())
        {
            let first = generate(now)?;
            if store.add_first_tool_key(&first).await? {
                tracing::info!(kid = %first.kid, "generated the tool's first signing key");
            }
        }
        Self::load(store).await
    }

    pub async fn load(store: &Store) -> Result<ToolKeys, KeyError> {
        let keys = store
            .tool_keys()
            .await?
            .into_iter()
            .map(|row| parse(&row))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ToolKeys {
            keys: Arc::new(keys),
        })
    }

    /// Makes a new key the signing key; the previous one is retired now and
    /// published until `now + grace`. Returns the new kid.
    pub async fn rotate(store: &Store, now: i64) -> Result<String, KeyError> {
        let key = generate(now)?;
        store.add_tool_key(&key).await?;
        tracing::info!(kid = %key.kid, "rotated the tool's signing key");
        Ok(key.kid)
    }

    /// The key that signs: the newest one not retired.
    pub fn signing(&self) -> Option<&ToolKey> {
        self.keys.iter().find(|k| k.retired_at.is_none())
    }

    /// What `/lti/jwks` publishes: live keys, and retired ones within `grace_ms`.
    pub fn jwks(&self, now: i64, grace_ms: i64) -> JwkSet {
        JwkSet {
            keys: self
                .keys
                .iter()
                .filter(|k| k.retired_at.is_none_or(|at| now < at + grace_ms))
                .map(|k| k.jwk.clone())
                .collect(),
        }
    }

    pub fn all(&self) -> &[ToolKey] {
        &self.keys
    }
}

/// A new 2048-bit RSA key with a random kid (kids are never reused).
fn generate(now: i64) -> Result<ToolKeyRow, KeyError> {
    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generate)?;
    let der: Pkcs8V1Der = pair.as_der().map_err(|_| KeyError::Generate)?;
    Ok(ToolKeyRow {
        kid: format!("{:032x}", rand::random::<u128>()),
        private_pem: pem("PRIVATE KEY", der.as_ref()),
        created_at: now,
        retired_at: None,
    })
}

/// PEM armour around DER bytes.
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn parse(row: &ToolKeyRow) -> Result<ToolKey, KeyError> {
    let corrupt = |reason: String| KeyError::Corrupt {
        kid: row.kid.clone(),
        reason,
    };
    let encoding = EncodingKey::from_rsa_pem(row.private_pem.as_bytes())
        .map_err(|e| corrupt(e.to_string()))?;
    let mut jwk =
        Jwk::from_encoding_key(&encoding, Algorithm::RS256).map_err(|e| corrupt(e.to_string()))?;
    // Canvas insists on alg and use; the kid is how platforms pick the key.
    jwk.common.key_id = Some(row.kid.clone());
    jwk.common.key_algorithm = Some(KeyAlgorithm::RS256);
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok(ToolKey {
        kid: row.kid.clone(),
        encoding,
        jwk,
        created_at: row.created_at,
        retired_at: row.retired_at,
    })
}
