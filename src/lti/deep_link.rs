//! Deep Linking 2.0: an instructor creating an assignment picks a labpool
//! course (among those that name the platform); labpool answers the
//! platform with a signed LtiDeepLinkingResponse whose resource link
//! carries the course as the `labpool_course` custom parameter (for people
//! reading the link) and as a signed `labpool_placement` (see
//! `placement.rs`), which later launches resolve.

use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::placement::PLACEMENT_PARAM;
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
    /// The platform is the try-it LMS, which may place any course.
    #[serde(default)]
    any_course: bool,
    /// The platform's `data`, whatever JSON it is, echoed unchanged.
    data: Option<serde_json::Value>,
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
            issuer: launch.registration.platform.issuer.clone(),
            client_id: launch.registration.platform.client_id.clone(),
            deployment_id: launch.claims.deployment().to_owned(),
            return_url: settings.deep_link_return_url.clone(),
            any_course: launch.registration.platform.any_course,
            data: settings.data.clone(),
        });
        let deployment = launch.claims.deployment();
        Ok(Picker {
            // Only the courses this platform may launch.
            courses: catalog
                .courses
                .iter()
                .filter(|c| c.allows(&launch.registration, deployment))
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
        // The picker offered only these; a hand-edited form is refused too.
        if !request.any_course && !chosen.lti.allows(&request.issuer, &request.deployment_id) {
            return Err(Refusal::course_scope(format!(
                "course `{course}` may not be launched from `{}` (deployment `{}`): its file \
                 does not name this platform under lti.platforms",
                request.issuer, request.deployment_id
            )));
        }
        // What later launches of the link open: signed, since a custom
        // parameter is otherwise anything an instructor types.
        let placement = self.placements.seal(
            &chosen.name,
            &request.issuer,
            &request.deployment_id,
            secs(now),
        );
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
                "custom": { COURSE_PARAM: chosen.name, PLACEMENT_PARAM: placement },
            }],
            format!("{DL_CLAIM}msg"): format!("Linked to the {} lab", chosen.title),
        });
        if let Some(data) = &request.data {
            claims[format!("{DL_CLAIM}data")] = data.clone();
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
