//! RSA signing keys and hand-made JWTs.
//!
//! The platform signs id_tokens with RS256 (Security Framework §5.1.3 and
//! §6.1) and publishes its public keys as a JWKS. Tests also need tokens that
//! a JWT library refuses to produce (`alg: none`), so compact serialisation is
//! written out here too.

use anyhow::Context as _;
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

use crate::lti::keys::pem;

/// An RSA-2048 key pair with its key id: what signs a platform's id_tokens,
/// and what a test's fake tool signs its deep-linking responses with.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    public_pem: String,
    jwk: Jwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key with a fresh random `kid` (kids are never reused, so a
    /// verifier's cache can never pair a kid with the wrong key).
    pub fn generate() -> anyhow::Result<Self> {
        Self::generate_with_kid(random_hex())
    }

    /// A fresh key published under `kid`: the wrong-key forgery reuses the
    /// platform's current kid with a key nobody published.
    pub fn generate_with_kid(kid: String) -> anyhow::Result<Self> {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .map_err(|_| anyhow::anyhow!("RSA key generation failed"))?;
        let private_der: Pkcs8V1Der = pair
            .as_der()
            .map_err(|_| anyhow::anyhow!("RSA private key serialisation failed"))?;
        let public_der: PublicKeyX509Der = pair
            .public_key()
            .as_der()
            .map_err(|_| anyhow::anyhow!("RSA public key serialisation failed"))?;
        let private_pem = pem("PRIVATE KEY", private_der.as_ref());
        let encoding = EncodingKey::from_rsa_pem(private_pem.as_bytes())
            .context("loading the generated RSA key")?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256)
            .context("JWK of the generated RSA key")?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Ok(Self {
            kid,
            encoding,
            public_pem: pem("PUBLIC KEY", public_der.as_ref()),
            jwk,
        })
    }

    /// The key id published in the JWKS and put in token headers.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK: `kty`, `n`, `e`, `kid`, `alg` RS256, `use`
    /// sig (Canvas requires `alg` and `use`).
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// The public key as a JWK in JSON, ready for a `{"keys": [...]}` set.
    pub fn jwk_json(&self) -> Value {
        serde_json::to_value(&self.jwk).expect("a JWK serialises")
    }

    /// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// Signs `claims` with RS256 and a header `{alg, typ: "JWT", kid}`.
    pub fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        self.sign_with_header(&self.header(), claims)
    }

    /// The header [`sign`](Self::sign) uses, for callers that change it.
    pub fn header(&self) -> Header {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("JWT".to_owned());
        header.kid = Some(self.kid.clone());
        header
    }

    /// Signs `claims` with this key under a caller's header (its `alg` must
    /// be an RSA one).
    pub fn sign_with_header(&self, header: &Header, claims: &Value) -> anyhow::Result<String> {
        jsonwebtoken::encode(header, claims, &self.encoding).context("signing a JWT")
    }
}

/// 128 random bits in hex: key ids, hints, tokens, client ids.
pub fn random_hex() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Base64url without padding, the JOSE encoding.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.payload.signature` from JSON parts and raw signature bytes, for
/// tokens no library will sign (`alg: none`).
pub fn compact_jwt(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(signature)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn jwk_has_the_fields_platforms_require_and_verifies_signatures() {
        let key = SigningKey::generate().unwrap();
        let jwk = key.jwk_json();
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["alg"], "RS256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], key.kid());
        assert_eq!(jwk["e"], "AQAB");
        // 2048-bit modulus: 256 bytes, 342 base64url characters.
        assert_eq!(jwk["n"].as_str().unwrap().len(), 342);

        let token = key
            .sign(&serde_json::json!({"sub": "x", "exp": 4_000_000_000u64}))
            .unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.required_spec_claims.clear();
        let from_jwk = DecodingKey::from_jwk(key.jwk()).unwrap();
        jsonwebtoken::decode::<Value>(&token, &from_jwk, &validation).unwrap();
        let from_pem = DecodingKey::from_rsa_pem(key.public_key_pem().as_bytes()).unwrap();
        jsonwebtoken::decode::<Value>(&token, &from_pem, &validation).unwrap();
    }

    #[test]
    fn pem_armour_has_64_character_lines() {
        let key = SigningKey::generate().unwrap();
        let pem = key.public_key_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(pem.ends_with("-----END PUBLIC KEY-----\n"));
        let lines: Vec<&str> = pem.lines().collect();
        assert!(lines[1..lines.len() - 2].iter().all(|l| l.len() == 64));
        assert!(lines[lines.len() - 2].len() <= 64);
    }

    #[test]
    fn kids_are_fresh() {
        assert_ne!(random_hex(), random_hex());
        assert_eq!(random_hex().len(), 32);
    }
}
