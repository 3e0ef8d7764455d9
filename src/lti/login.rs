//! OIDC third-party login initiation (IMS Security Framework §5.1.1.1): the
//! platform sends the browser here; labpool records a state and a nonce and
//! sends the browser on to the platform's registered authorization URL.

use serde::Deserialize;

use super::{Lti, Refusal};
use crate::store::LoginRow;

/// A login must be completed by a launch within this.
pub const LOGIN_TTL_MS: i64 = 10 * 60 * 1000;

/// The longest value a login parameter labpool keeps may have (bytes). The
/// LTI specs expect short opaque strings (platforms send ids and JWTs of a
/// few hundred bytes); each is stored until the login expires and goes
/// back out in the redirect, so anything longer is refused before either.
pub const MAX_PARAM_BYTES: usize = 4096;

/// How long a client refused for the global cap is asked to wait.
pub const FULL_RETRY_AFTER_SECS: u64 = 60;

/// The login initiation parameters (query string or form).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LoginRequest {
    pub iss: Option<String>,
    pub login_hint: Option<String>,
    pub target_link_uri: Option<String>,
    pub lti_message_hint: Option<String>,
    pub lti_deployment_id: Option<String>,
    pub client_id: Option<String>,
    /// The frame that keeps data for us when cookies are blocked (LTI
    /// client-side postMessages).
    pub lti_storage_target: Option<String>,
}

/// Where to send the browser, and what to bind to it.
#[derive(Debug, Clone)]
pub struct LoginStart {
    /// The platform's authorization URL with the authentication request.
    pub redirect: String,
    pub state: String,
    /// The name of the cookie binding `state` to this browser.
    pub cookie_name: String,
    /// When the platform offers storage: the frame name and the secret to
    /// put there, for browsers that drop our cookie in the LMS's iframe.
    pub storage: Option<(String, String)>,
    /// The platform's origin (postMessage target for platform storage).
    pub platform_origin: String,
}

/// The cookie binding a login's state to the browser. Named per state so
/// several launches in one browser (tabs, iframes) do not overwrite each
/// other.
pub fn state_cookie_name(state: &str) -> String {
    format!("lti_state_{state}")
}

impl Lti {
    pub async fn login(&self, req: LoginRequest, now: i64) -> Result<LoginStart, Refusal> {
        let required = |v: Option<String>, name: &str| {
            v.filter(|s| !s.is_empty())
                .ok_or_else(|| Refusal::bad_launch(format!("login initiation without `{name}`")))
        };
        // Before anything is looked up or stored.
        for (name, value) in [
            ("iss", &req.iss),
            ("login_hint", &req.login_hint),
            ("target_link_uri", &req.target_link_uri),
            ("lti_message_hint", &req.lti_message_hint),
            ("lti_deployment_id", &req.lti_deployment_id),
            ("client_id", &req.client_id),
            ("lti_storage_target", &req.lti_storage_target),
        ] {
            if let Some(v) = value
                && v.len() > MAX_PARAM_BYTES
            {
                return Err(Refusal::bad_launch(format!(
                    "login initiation with a `{name}` of {} bytes (at most {MAX_PARAM_BYTES})",
                    v.len()
                )));
            }
        }
        let iss = required(req.iss, "iss")?;
        let login_hint = required(req.login_hint, "login_hint")?;
        let target = required(req.target_link_uri, "target_link_uri")?;
        if !self.is_ours(&target) {
            return Err(Refusal::bad_launch(format!(
                "target_link_uri `{target}` is not a labpool URL"
            )));
        }
        let found = self.registry.find(&iss, req.client_id.as_deref()).await?;
        let registration = match found.as_slice() {
            [] => {
                return Err(Refusal::unknown_platform(match &req.client_id {
                    Some(c) => format!("issuer `{iss}` with client id `{c}` is not registered"),
                    None => format!("issuer `{iss}` is not registered with labpool"),
                }));
            }
            [one] => one.clone(),
            _ => {
                return Err(Refusal::bad_launch(format!(
                    "issuer `{iss}` has several registrations and the login names no client_id"
                )));
            }
        };
        if let Some(d) = &req.lti_deployment_id
            && !registration.allows_deployment(d)
        {
            return Err(Refusal::unknown_platform(format!(
                "deployment `{d}` of `{iss}` is not registered with labpool"
            )));
        }
        let state = random_token();
        let nonce = random_token();
        let storage = req
            .lti_storage_target
            .filter(|t| !t.is_empty())
            .map(|target| (target, random_token()));
        let stored = self
            .store
            .insert_login_bounded(
                &LoginRow {
                    state: state.clone(),
                    nonce: nonce.clone(),
                    issuer: iss.clone(),
                    client_id: registration.platform.client_id.clone(),
                    deployment_id: req.lti_deployment_id.clone(),
                    target_link_uri: target,
                    login_hint: login_hint.clone(),
                    message_hint: req.lti_message_hint.clone(),
                    storage_secret: storage.as_ref().map(|(_, s)| s.clone()),
                    storage_target: storage.as_ref().map(|(t, _)| t.clone()),
                    created_at: now,
                    expires_at: now + LOGIN_TTL_MS,
                    used_at: None,
                },
                self.max_pending_logins,
            )
            .await?;
        if !stored {
            let mut refusal = Refusal::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "login-capacity",
                format!(
                    "{} logins are waiting for their launch (lti.logins.max_pending)",
                    self.max_pending_logins
                ),
            );
            refusal.retry_after = Some(FULL_RETRY_AFTER_SECS);
            return Err(refusal);
        }

        let mut redirect = url::Url::parse(&registration.platform.auth_login_url).map_err(|e| {
            Refusal::internal(format!(
                "registered auth_login_url `{}` is not a URL: {e}",
                registration.platform.auth_login_url
            ))
        })?;
        {
            let mut q = redirect.query_pairs_mut();
            q.append_pair("scope", "openid")
                .append_pair("response_type", "id_token")
                .append_pair("response_mode", "form_post")
                .append_pair("prompt", "none")
                .append_pair("client_id", &registration.platform.client_id)
                .append_pair("redirect_uri", &self.launch_url())
                .append_pair("login_hint", &login_hint)
                .append_pair("state", &state)
                .append_pair("nonce", &nonce);
            if let Some(hint) = &req.lti_message_hint {
                q.append_pair("lti_message_hint", hint);
            }
        }
        let platform_origin = redirect.origin().ascii_serialization();
        Ok(LoginStart {
            redirect: redirect.into(),
            cookie_name: state_cookie_name(&state),
            state,
            storage,
            platform_origin,
        })
    }
}

/// 128 random bits as hex: states, nonces, secrets.
pub fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}
