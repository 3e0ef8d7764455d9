//! Placements: what a Deep Linking answer puts on the resource link it
//! creates, so that later launches of that link open the chosen course.
//!
//! A course named by a plain custom parameter could be typed by any
//! instructor on any platform (`labpool_course=alpha`), so launches honour
//! only a value labpool signed: the `labpool_placement` custom parameter,
//! an HS256 JWT naming the course, the platform's issuer and the deployment
//! it was placed through, under a key of its own (in the store's secrets,
//! so every replica checks what another signed). A placement does not
//! expire: an LMS keeps its links for years, and copies them with the LMS
//! course; the course's own `lti.platforms` is checked at every launch, so
//! removing a platform there ends its placements.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// The custom parameter that carries a placement.
pub const PLACEMENT_PARAM: &str = "labpool_placement";
const AUDIENCE: &str = "labpool-placement";

/// What a placement says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    aud: String,
    /// The course the instructor chose.
    pub course: String,
    /// The platform and deployment the choice was made on.
    pub issuer: String,
    pub deployment_id: String,
    /// When it was made (unix seconds), for the log.
    pub iat: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("the link's labpool_placement is not one labpool signed")]
    Forged,
    #[error(
        "the link was placed on another platform or deployment (`{issuer}`, `{deployment}`) \
         than the one launching it"
    )]
    ElsewhereMade { issuer: String, deployment: String },
}

#[derive(Clone)]
pub struct Placements {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for Placements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Placements(***)")
    }
}

impl Placements {
    /// The store's placement key, created on first use.
    pub async fn load_or_create(store: &Store, now_ms: i64) -> Result<Placements, StoreError> {
        let secret = store
            .secret(
                "placement-key",
                || hex::encode(rand::random::<[u8; 32]>()),
                now_ms,
            )
            .await?;
        Ok(Placements::from_secret(secret.as_bytes()))
    }

    pub fn from_secret(secret: &[u8]) -> Placements {
        Placements {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// A placement of `course` made on `issuer`'s `deployment_id` at `now`
    /// (unix seconds).
    pub fn seal(&self, course: &str, issuer: &str, deployment_id: &str, now: i64) -> String {
        let claims = Placement {
            aud: AUDIENCE.into(),
            course: course.into(),
            issuer: issuer.into(),
            deployment_id: deployment_id.into(),
            iat: now,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// The placement in `token`, if labpool signed it and it was made on
    /// the platform and deployment now launching it.
    pub fn open(
        &self,
        token: &str,
        issuer: &str,
        deployment_id: &str,
    ) -> Result<Placement, PlacementError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        // Placements last as long as the LMS link (see the module).
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["aud"]);
        let placement = jsonwebtoken::decode::<Placement>(token, &self.decoding, &validation)
            .map_err(|_| PlacementError::Forged)?
            .claims;
        if placement.issuer != issuer || placement.deployment_id != deployment_id {
            return Err(PlacementError::ElsewhereMade {
                issuer: placement.issuer,
                deployment: placement.deployment_id,
            });
        }
        Ok(placement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placement_opens_only_where_it_was_made_and_only_as_signed() {
        let p = Placements::from_secret(b"k1");
        let token = p.seal("alpha", "https://lms.example", "d1", 1000);
        let open = p.open(&token, "https://lms.example", "d1").unwrap();
        assert_eq!(open.course, "alpha");
        assert!(matches!(
            p.open(&token, "https://other.example", "d1"),
            Err(PlacementError::ElsewhereMade { .. })
        ));
        assert!(matches!(
            p.open(&token, "https://lms.example", "d2"),
            Err(PlacementError::ElsewhereMade { .. })
        ));
        // Another key, a typed value, alg none: not labpool's.
        let other = Placements::from_secret(b"k2").seal("alpha", "https://lms.example", "d1", 1);
        assert_eq!(
            p.open(&other, "https://lms.example", "d1"),
            Err(PlacementError::Forged)
        );
        assert_eq!(
            p.open("alpha", "https://lms.example", "d1"),
            Err(PlacementError::Forged)
        );
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[0] = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        parts[2] = "";
        assert_eq!(
            p.open(&parts.join("."), "https://lms.example", "d1"),
            Err(PlacementError::Forged)
        );
    }
}
