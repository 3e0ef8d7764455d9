//! Verifying a launch's id_token: every check of IMS Security Framework 1.0
//! §5.1.3 and LTI Core 1.3 §5 that can be made from the token alone. The
//! checks that need the store (the nonce and state of our login) follow in
//! the launch, in the same transaction as the claim.

use base64::Engine;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::platforms::Registration;
use super::{Lti, Refusal};

/// Clock skew tolerated on `exp` and `iat`, in seconds.
pub const LEEWAY_SECS: u64 = 60;
/// An id_token issued longer ago than this is refused even if its `exp` is
/// further out: a launch is used within seconds of being made.
const MAX_AGE_SECS: i64 = 3600;

pub const CLAIM: &str = "https://purl.imsglobal.org/spec/lti/claim/";
pub const DL_CLAIM: &str = "https://purl.imsglobal.org/spec/lti-dl/claim/";
pub const RESOURCE_LINK_REQUEST: &str = "LtiResourceLinkRequest";
pub const DEEP_LINKING_REQUEST: &str = "LtiDeepLinkingRequest";

/// A verified launch.
#[derive(Debug, Clone)]
pub struct Launch {
    pub registration: Registration,
    pub claims: LaunchClaims,
}

/// The claims labpool uses; unknown claims are ignored, as the spec asks.
#[derive(Debug, Clone, Deserialize)]
pub struct LaunchClaims {
    pub iss: String,
    #[serde(default)]
    pub sub: Option<String>,
    pub nonce: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "https://purl.imsglobal.org/spec/lti/claim/message_type")]
    pub message_type: Option<String>,
    #[serde(rename = "https://purl.imsglobal.org/spec/lti/claim/version")]
    pub version: Option<String>,
    #[serde(rename = "https://purl.imsglobal.org/spec/lti/claim/deployment_id")]
    pub deployment_id: Option<String>,
    #[serde(rename = "https://purl.imsglobal.org/spec/lti/claim/target_link_uri")]
    pub target_link_uri: Option<String>,
    #[serde(rename = "https://purl.imsglobal.org/spec/lti/claim/resource_link")]
    pub resource_link: Option<ResourceLink>,
    #[serde(rename = "https://purl.imsglobal.org/spec/lti/claim/roles")]
    pub roles: Option<Value>,
    #[serde(rename = "https://purl.imsglobal.org/spec/lti/claim/context")]
    pub context: Option<Context>,
    #[serde(rename = "https://purl.imsglobal.org/spec/lti/claim/custom", default)]
    pub custom: Option<Map<String, Value>>,
    #[serde(rename = "https://purl.imsglobal.org/spec/lti-dl/claim/deep_linking_settings")]
    pub deep_linking: Option<DeepLinkingSettings>,
    #[serde(
        rename = "https://purl.imsglobal.org/spec/lti/claim/launch_presentation",
        default
    )]
    pub launch_presentation: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ResourceLink {
    pub id: String,
    #[serde(default)]
    pub title: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Context {
    pub id: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub label: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DeepLinkingSettings {
    pub deep_link_return_url: String,
    #[serde(default)]
    pub accept_types: Vec<String>,
    /// Opaque to labpool and echoed unchanged in the response. The spec
    /// says a string, but platforms send objects too: any JSON value.
    #[serde(default)]
    pub data: Option<Value>,
}

impl LaunchClaims {
    pub fn is_deep_linking(&self) -> bool {
        self.message_type.as_deref() == Some(DEEP_LINKING_REQUEST)
    }

    pub fn deployment(&self) -> &str {
        self.deployment_id.as_deref().unwrap_or_default()
    }

    /// Where the platform asks to send the user back
    /// (`launch_presentation.return_url`): only an absolute http(s) URL,
    /// so a page can link to it safely.
    pub fn return_url(&self) -> Option<String> {
        let url = self
            .launch_presentation
            .as_ref()?
            .get("return_url")?
            .as_str()?;
        let parsed = url::Url::parse(url).ok()?;
        matches!(parsed.scheme(), "http" | "https").then(|| parsed.into())
    }

    /// A custom parameter as text (platforms send strings; numbers are
    /// accepted too).
    pub fn custom(&self, name: &str) -> Option<String> {
        match self.custom.as_ref()?.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// The parts of a JWT that are read before its signature is checked, only
/// to know which key to check it with.
#[derive(Debug, Deserialize)]
struct Header {
    alg: Option<String>,
    kid: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Unverified {
    iss: Option<String>,
    aud: Option<Audience>,
    azp: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn list(&self) -> Vec<&str> {
        match self {
            Audience::One(a) => vec![a.as_str()],
            Audience::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

fn segment<T: for<'de> Deserialize<'de>>(part: Option<&str>) -> Option<T> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part?.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl Lti {
    /// Verifies `id_token` as a launch to this tool at `now` (unix seconds).
    pub async fn verify(&self, id_token: &str, now: i64) -> Result<Launch, Refusal> {
        let mut parts = id_token.split('.');
        let (header, payload) = (parts.next(), parts.next());
        let header: Header =
            segment(header).ok_or_else(|| Refusal::forged("the id_token is not a JWT"))?;
        // The algorithm is decided here, not by the token: `none` would skip
        // the signature, and HS* would make the platform's *public* key a
        // shared secret anyone can sign with.
        match header.alg.as_deref() {
            Some("RS256") => {}
            Some(alg) => {
                return Err(Refusal::forged(format!(
                    "id_token algorithm `{alg}` refused: only RS256 is accepted"
                )));
            }
            None => return Err(Refusal::forged("id_token header has no `alg`")),
        }
        let kid = header
            .kid
            .ok_or_else(|| Refusal::forged("id_token header has no `kid`"))?;
        let unverified: Unverified =
            segment(payload).ok_or_else(|| Refusal::forged("the id_token payload is not JSON"))?;
        let iss = unverified
            .iss
            .ok_or_else(|| Refusal::forged("id_token has no `iss`"))?;
        let audience = unverified
            .aud
            .ok_or_else(|| Refusal::forged("id_token has no `aud`"))?;
        let audiences = audience.list();

        // Which of our registrations this is for: the issuer, and the client
        // id in aud (azp decides when there are several audiences).
        let candidates = self
            .registry
            .find(&iss, None)
            .await
            .map_err(Refusal::internal)?;
        if candidates.is_empty() {
            return Err(Refusal::unknown_platform(format!(
                "issuer `{iss}` is not registered with labpool"
            )));
        }
        // Security Framework §5.1.3: every audience must be one the tool
        // trusts, i.e. one of labpool's own client ids at this issuer. A
        // token also addressed to another party was not minted for labpool
        // alone (the other party could replay it here, or it could ours).
        let trusted: Vec<&str> = candidates
            .iter()
            .map(|r| r.platform.client_id.as_str())
            .collect();
        if let Some(stranger) = audiences.iter().find(|a| !trusted.contains(a))
            && audiences.iter().any(|a| trusted.contains(a))
        {
            return Err(Refusal::forged(format!(
                "audience `{stranger}` is not one labpool trusts: an id_token for labpool \
                 must name only labpool's client ids at `{iss}`"
            )));
        }
        let registration = candidates
            .into_iter()
            .find(|r| audiences.contains(&r.platform.client_id.as_str()))
            .ok_or_else(|| {
                Refusal::forged(format!(
                    "audience {audiences:?} does not contain labpool's client id for `{iss}`"
                ))
            })?;
        if audiences.len() > 1 || unverified.azp.is_some() {
            match &unverified.azp {
                Some(azp) if *azp == registration.platform.client_id => {}
                Some(azp) => {
                    return Err(Refusal::forged(format!(
                        "azp `{azp}` is not labpool's client id `{}`",
                        registration.platform.client_id
                    )));
                }
                None => {
                    return Err(Refusal::forged(
                        "id_token has several audiences and no azp naming labpool",
                    ));
                }
            }
        }

        let key = self
            .platform_keys
            .key(&registration.platform.jwks_url, &kid, registration.dynamic)
            .await
            .map_err(|e| match e {
                super::jwks::JwksError::UnknownKid { .. } => Refusal::forged(e.to_string()),
                super::jwks::JwksError::Fetch { .. } => {
                    Refusal::platform_unreachable(e.to_string())
                }
            })?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
        validation.set_issuer(&[&registration.platform.issuer]);
        // Checked above, with azp, which jsonwebtoken does not do.
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Value>(id_token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => Refusal::expired("the id_token has expired"),
                ErrorKind::InvalidSignature => Refusal::forged(format!(
                    "the id_token signature does not verify with the platform's key `{kid}`"
                )),
                ErrorKind::MissingRequiredClaim(c) => {
                    Refusal::forged(format!("id_token has no `{c}`"))
                }
                _ => Refusal::forged(format!("the id_token is invalid: {e}")),
            }
        })?;
        // jsonwebtoken's required claims do not cover `iat`: check it here,
        // so a token without one is named for what it lacks.
        let iat = match data.claims.get("iat") {
            None | Some(Value::Null) => return Err(Refusal::forged("id_token has no `iat`")),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| Refusal::forged("id_token `iat` is not a number of seconds"))?,
        };
        if iat > now + LEEWAY_SECS as i64 {
            return Err(Refusal::forged(
                "the id_token was issued in the future (iat)",
            ));
        }
        if iat < now - MAX_AGE_SECS {
            return Err(Refusal::expired(
                "the id_token was issued over an hour ago (iat)",
            ));
        }
        let claims: LaunchClaims = serde_json::from_value(data.claims)
            .map_err(|e| Refusal::bad_launch(format!("malformed LTI claims: {e}")))?;
        self.check_claims(&registration, &claims)?;
        Ok(Launch {
            registration,
            claims,
        })
    }

    /// LTI Core 1.3 §5.3–5.4: the claims every launch must carry.
    fn check_claims(
        &self,
        registration: &Registration,
        claims: &LaunchClaims,
    ) -> Result<(), Refusal> {
        if claims.nonce.as_deref().is_none_or(str::is_empty) {
            return Err(Refusal::forged("id_token has no nonce"));
        }
        match claims.version.as_deref() {
            Some("1.3.0") => {}
            other => {
                return Err(Refusal::bad_launch(format!(
                    "LTI version {other:?} is not 1.3.0"
                )));
            }
        }
        let deployment = claims.deployment();
        if deployment.is_empty() || deployment.len() > 255 {
            return Err(Refusal::bad_launch(
                "the launch has no valid deployment_id (1 to 255 characters)",
            ));
        }
        if !registration.allows_deployment(deployment) {
            return Err(Refusal::unknown_platform(format!(
                "deployment `{deployment}` of `{}` is not registered with labpool",
                registration.platform.issuer
            )));
        }
        let target = claims.target_link_uri.as_deref().unwrap_or_default();
        if !self.is_ours(target) {
            return Err(Refusal::bad_launch(format!(
                "target_link_uri `{target}` is not a labpool URL"
            )));
        }
        if !matches!(claims.roles, Some(Value::Array(_))) {
            return Err(Refusal::bad_launch(
                "the roles claim is missing or not an array",
            ));
        }
        if claims.sub.as_deref().is_none_or(str::is_empty) {
            return Err(Refusal::bad_launch(
                "anonymous launch: a lab belongs to a user, so `sub` is required",
            ));
        }
        match claims.message_type.as_deref() {
            Some(RESOURCE_LINK_REQUEST) => {
                if claims
                    .resource_link
                    .as_ref()
                    .is_none_or(|r| r.id.is_empty())
                {
                    return Err(Refusal::bad_launch("the launch has no resource_link.id"));
                }
            }
            Some(DEEP_LINKING_REQUEST) => {
                if claims.deep_linking.is_none() {
                    return Err(Refusal::bad_launch(
                        "a deep linking request without deep_linking_settings",
                    ));
                }
            }
            other => {
                return Err(Refusal::bad_launch(format!(
                    "message type {other:?} is not one labpool handles"
                )));
            }
        }
        Ok(())
    }
}
