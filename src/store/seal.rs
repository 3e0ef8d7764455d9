//! Sealing the store's secrets (the session-token key, the tool's private
//! keys) with a key that is not in the database, so a copy of the database
//! file or a dump alone gives nothing to forge tokens or launches with.
//!
//! AES-256-GCM (aws-lc-rs, already labpool's crypto library) with a random
//! 96-bit nonce per value; the associated data names the row (`secrets/NAME`,
//! `tool_keys/KID`), so a sealed value moved to another row does not open.
//! A sealed value is text: `sealed:v1:` + base64url(nonce ‖ ciphertext ‖ tag).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What every sealed value starts with; plaintext values never do (they are
/// hex or PEM), which is how an old store's rows are recognised.
pub const SEALED_PREFIX: &str = "sealed:v1:";

/// Length of a secret key in bytes.
pub const KEY_LEN: usize = 32;

/// The key that seals the store's secrets. Never printed.
#[derive(Clone)]
pub struct Sealer {
    key: std::sync::Arc<LessSafeKey>,
    /// A fingerprint of the key (not the key): tells two keys apart in a
    /// comparison without keeping the bytes around.
    id: [u8; 32],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

/// A sealed value did not open: another key, or a damaged value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot open the sealed value of {0}")]
pub struct Unopenable(pub String);

impl Sealer {
    pub fn new(key: &[u8; KEY_LEN]) -> Sealer {
        let unbound = UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key");
        use sha2::Digest;
        let id = sha2::Sha256::digest([b"labpool sealer id:".as_slice(), key].concat()).into();
        Sealer {
            key: std::sync::Arc::new(LessSafeKey::new(unbound)),
            id,
        }
    }

    /// Whether `other` is the same key.
    pub fn same_key(&self, other: &Sealer) -> bool {
        self.id == other.id
    }

    /// Seals `plaintext` for the row named `row`.
    pub fn seal(&self, row: &str, plaintext: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("the system's random source");
        let mut data = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(row.as_bytes()),
                &mut data,
            )
            .expect("AES-GCM sealing cannot fail on a small value");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens what [`Sealer::seal`] sealed for `row`.
    pub fn open(&self, row: &str, sealed: &str) -> Result<String, Unopenable> {
        let fail = || Unopenable(row.to_owned());
        let body = sealed.strip_prefix(SEALED_PREFIX).ok_or_else(fail)?;
        let mut bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| fail())?;
        if bytes.len() < NONCE_LEN {
            return Err(fail());
        }
        let mut data = bytes.split_off(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = bytes.try_into().map_err(|_| fail())?;
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(row.as_bytes()),
                &mut data,
            )
            .map_err(|_| fail())?;
        String::from_utf8(plain.to_vec()).map_err(|_| fail())
    }
}

/// Whether a stored value is sealed (else it is an old store's plaintext).
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(SEALED_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_with_its_key_and_row_only() {
        let a = Sealer::new(&[7; KEY_LEN]);
        let b = Sealer::new(&[8; KEY_LEN]);
        let sealed = a.seal("secrets/x", "the value");
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("the value"));
        assert_eq!(a.open("secrets/x", &sealed).unwrap(), "the value");
        assert!(b.open("secrets/x", &sealed).is_err());
        assert!(a.open("secrets/y", &sealed).is_err());
        assert!(a.open("secrets/x", "the value").is_err());
        // A fresh nonce every time: equal values do not look equal.
        assert_ne!(sealed, a.seal("secrets/x", "the value"));
        assert!(a.same_key(&Sealer::new(&[7; KEY_LEN])));
        assert!(!a.same_key(&b));
    }
}
