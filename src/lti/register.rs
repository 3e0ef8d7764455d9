//! LTI Dynamic Registration 1.0: the LMS admin pastes labpool's
//! registration URL; the LMS opens it with `openid_configuration` and
//! `registration_token`; labpool reads the platform's configuration,
//! registers itself at the platform's `registration_endpoint`, stores the
//! client id it gets, and asks the LMS to close the window.
//!
//! The URL carries a secret from labpool's configuration: whoever opens it
//! registers a platform that may then launch labs.

use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::{Lti, Refusal};
use crate::store::PlatformRow;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RegistrationStart {
    pub openid_configuration: Option<String>,
    pub registration_token: Option<String>,
}

/// The platform configuration fields labpool uses.
#[derive(Debug, Deserialize)]
struct PlatformConfiguration {
    issuer: String,
    authorization_endpoint: String,
    registration_endpoint: String,
    jwks_uri: String,
    token_endpoint: String,
    #[serde(rename = "https://purl.imsglobal.org/spec/lti-platform-configuration")]
    lti: Option<Value>,
}

/// A finished registration.
#[derive(Debug, Clone)]
pub struct Registered {
    pub issuer: String,
    pub client_id: String,
    pub deployment_id: Option<String>,
    pub product: Option<String>,
}

impl Lti {
    /// Whether `secret` opens Dynamic Registration (off when unconfigured).
    pub fn registration_allowed(&self, secret: &str) -> bool {
        self.registration_secret
            .as_deref()
            .is_some_and(|s| bool::from(s.as_bytes().ct_eq(secret.as_bytes())))
    }

    pub async fn register(
        &self,
        start: RegistrationStart,
        now: i64,
    ) -> Result<Registered, Refusal> {
        let config_url = start
            .openid_configuration
            .filter(|u| !u.is_empty())
            .ok_or_else(|| Refusal::bad_launch("registration without openid_configuration"))?;
        let parsed = url::Url::parse(&config_url)
            .map_err(|e| Refusal::bad_launch(format!("openid_configuration: {e}")))?;
        let mut get = self
            .http
            .get(parsed.clone())
            .timeout(std::time::Duration::from_secs(10));
        if let Some(token) = &start.registration_token {
            get = get.bearer_auth(token);
        }
        let platform: PlatformConfiguration = fetch_json(get)
            .await
            .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()))
            .map_err(|e| {
                Refusal::platform_unreachable(format!(
                    "platform configuration at {config_url}: {e}"
                ))
            })?;
        // The configuration must come from the issuer's own host: otherwise
        // any page could claim to be, say, Canvas.
        let issuer_host = url::Url::parse(&platform.issuer)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned));
        if issuer_host.as_deref() != parsed.host_str() {
            return Err(Refusal::forged(format!(
                "the configuration at {config_url} names issuer {}, on another host",
                platform.issuer
            )));
        }
        let product = platform
            .lti
            .as_ref()
            .and_then(|l| l.get("product_family_code"))
            .and_then(Value::as_str)
            .map(str::to_owned);

        let mut post = self
            .http
            .post(&platform.registration_endpoint)
            .timeout(std::time::Duration::from_secs(10))
            .json(&self.client_metadata());
        if let Some(token) = &start.registration_token {
            post = post.bearer_auth(token);
        }
        let answer = fetch_json(post).await.map_err(|e| {
            Refusal::platform_unreachable(format!(
                "registering at {}: {e}",
                platform.registration_endpoint
            ))
        })?;
        let client_id = answer
            .get("client_id")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Refusal::platform_unreachable("the platform's answer has no client_id"))?
            .to_owned();
        let deployment_id = answer
            .get("https://purl.imsglobal.org/spec/lti-tool-configuration")
            .and_then(|c| c.get("deployment_id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        self.store
            .upsert_platform(&PlatformRow {
                issuer: platform.issuer.clone(),
                client_id: client_id.clone(),
                auth_login_url: platform.authorization_endpoint,
                token_url: platform.token_endpoint,
                jwks_url: platform.jwks_uri,
                deployment_ids: serde_json::to_string(&deployment_id.iter().collect::<Vec<_>>())
                    .expect("strings serialize"),
                product: product.clone(),
                registered_at: now,
            })
            .await?;
        self.registry.forget_cache();
        tracing::info!(issuer = %platform.issuer, %client_id, ?deployment_id, ?product,
            "platform registered through Dynamic Registration");
        Ok(Registered {
            issuer: platform.issuer,
            client_id,
            deployment_id,
            product,
        })
    }

    /// labpool's OpenID client metadata with its LTI tool configuration.
    pub fn client_metadata(&self) -> Value {
        let domain = url::Url::parse(&self.base_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        json!({
            "application_type": "web",
            "response_types": ["id_token"],
            "grant_types": ["implicit", "client_credentials"],
            "initiate_login_uri": self.login_url(),
            "redirect_uris": [self.launch_url()],
            "client_name": "labpool",
            "jwks_uri": self.jwks_url(),
            "token_endpoint_auth_method": "private_key_jwt",
            "scope": "",
            "https://purl.imsglobal.org/spec/lti-tool-configuration": {
                "domain": domain,
                "description": "Warm lab VMs with a terminal in the browser",
                "target_link_uri": self.launch_url(),
                "claims": ["iss", "sub", "name"],
                "messages": [
                    {
                        "type": "LtiDeepLinkingRequest",
                        "target_link_uri": self.launch_url(),
                        "label": "labpool lab",
                        "placements": ["assignment_selection", "link_selection"],
                    },
                    { "type": "LtiResourceLinkRequest", "target_link_uri": self.launch_url() },
                ],
            },
        })
    }

    /// Canvas's developer key JSON ("Enter URL" when adding an LTI key).
    pub fn canvas_config(&self) -> Value {
        let deep_link = |placement: &str| {
            json!({
                "placement": placement,
                "message_type": "LtiDeepLinkingRequest",
                "target_link_uri": self.launch_url(),
                "text": "labpool lab",
            })
        };
        json!({
            "title": "labpool",
            "description": "Warm lab VMs with a terminal in the browser",
            "oidc_initiation_url": self.login_url(),
            "target_link_uri": self.launch_url(),
            "public_jwk_url": self.jwks_url(),
            "scopes": [],
            "extensions": [{
                "platform": "canvas.instructure.com",
                "privacy_level": "public",
                "settings": {
                    "placements": [deep_link("assignment_selection"), deep_link("link_selection")],
                },
            }],
            "custom_fields": {},
        })
    }
}

async fn fetch_json(request: reqwest::RequestBuilder) -> Result<Value, String> {
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        let excerpt: String = body.chars().take(300).collect();
        return Err(format!("HTTP {status}: {excerpt}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("not JSON: {e}"))
}
