//! Deep Linking 2.0: an instructor creating an assignment picks a labpool
//! course; labpool answers the platform with a signed
//! LtiDeepLinkingResponse whose resource link carries the course as the
//! `labpool_course` custom parameter, which later launches resolve.

use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::verify::{CLAIM, DL_CLAIM, Launch};
use super::{COURSE_PARAM, Lti, Refusal, secs};

/// The picker must be submitted within this.
const PICK_TTL_SECS: i64 = 3600;
const PICK_AUDIENCE: &str = "labpool-deep-link";

/// The course list shown to the instructor.
#[derive(Debug, Clone)]
pub struct Picker {
    /// (name, title) of every launchable course.
    pub courses: Vec<(String, String)>,
    /// The deep linking request, sealed: the form sends it back with the choice.
    pub request: String,
    pub context_title: Option<String>,
}

/// What the picker's form must bring back, signed by labpool.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PickRequest {
    aud: String,
    exp: i64,
    issuer: String,
    client_id: String,
    deployment_id: String,
    return_url: String,
    data: Option<String>,
}

/// The auto-posted answer to the platform.
#[derive(Debug, Clone)]
pub struct DeepLinkAnswer {
    pub return_url: String,
    pub jwt: String,
}

impl Lti {
    pub(crate) async fn picker(&self, launch: &Launch, now: i64) -> Result<Picker, Refusal> {
        let settings = launch
            .claims
            .deep_linking
            .as_ref()
            .ok_or_else(|| Refusal::bad_launch("no deep_linking_settings"))?;
        if !settings.accept_types.is_empty()
            && !settings.accept_types.iter().any(|t| t == "ltiResourceLink")
        {
            return Err(Refusal::bad_launch(
                "the platform does not accept LTI resource links here",
            ));
        }
        let catalog = self.catalog.get().await?;
        let request = self.tokens.seal(&PickRequest {
            aud: PICK_AUDIENCE.into(),
            exp: secs(now) + PICK_TTL_SECS,
            issuer: launch.registration.issuer.clone(),
            client_id: launch.registration.client_id.clone(),
            deployment_id: launch.claims.deployment().to_owned(),
            return_url: settings.deep_link_return_url.clone(),
            data: settings.data.clone(),
        });
        Ok(Picker {
            courses: catalog
                .courses
                .iter()
                .map(|c| (c.name.clone(), c.title.clone()))
                .collect(),
            request,
            context_title: launch.claims.context.as_ref().and_then(|c| c.title.clone()),
        })
    }

    /// The instructor chose `course`: the signed answer for the platform.
    pub async fn deep_link_answer(
        &self,
        request: &str,
        course: &str,
        now: i64,
    ) -> Result<DeepLinkAnswer, Refusal> {
        let request: PickRequest = self
            .tokens
            .unseal(request, PICK_AUDIENCE, secs(now))
            .map_err(|e| Refusal::forged(format!("course picker: {e}")))?;
        let catalog = self.catalog.get().await?;
        let chosen = catalog
            .course(course)
            .ok_or_else(|| Refusal::bad_launch(format!("no course `{course}` is offered")))?;
        let keys = self.tool_keys().await.map_err(Refusal::internal)?;
        let key = keys
            .signing()
            .ok_or_else(|| Refusal::internal("labpool has no signing key"))?;
        let iat = secs(now);
        let mut claims = json!({
            "iss": request.client_id,
            "aud": request.issuer,
            "iat": iat,
            "exp": iat + 300,
            "nonce": super::login::random_token(),
            format!("{CLAIM}deployment_id"): request.deployment_id,
            format!("{CLAIM}message_type"): "LtiDeepLinkingResponse",
            format!("{CLAIM}version"): "1.3.0",
            format!("{DL_CLAIM}content_items"): [{
                "type": "ltiResourceLink",
                "title": chosen.title,
                "url": self.launch_url(),
                "custom": { COURSE_PARAM: chosen.name },
            }],
            format!("{DL_CLAIM}msg"): format!("Linked to the {} lab", chosen.title),
        });
        if let Some(data) = &request.data {
            claims[format!("{DL_CLAIM}data")] = json!(data);
        }
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(key.kid.clone());
        let jwt =
            jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(Refusal::internal)?;
        tracing::info!(course = %chosen.name, issuer = %request.issuer, "deep link answered");
        Ok(DeepLinkAnswer {
            return_url: request.return_url,
            jwt,
        })
    }
}
