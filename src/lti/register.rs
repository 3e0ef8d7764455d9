//! LTI Dynamic Registration 1.0: the LMS admin pastes labpool's
//! registration URL; the LMS opens it with `openid_configuration` and
//! `registration_token`; labpool reads the platform's configuration,
//! registers itself at the platform's `registration_endpoint`, stores the
//! client id it gets, and asks the LMS to close the window.
//!
//! The URL is a one-time link a labpool admin made (`labpool lti
//! registration-link`, or the dashboard): stored as a hash, spent by the
//! first request that names it, dead after `lti.registration.link_ttl`.
//! Everything labpool fetches for it goes through [`Egress`](super::egress)
//! (no internal addresses unless allowed); whatever the remote side answers
//! is logged, never shown; every network failure reads the same. An
//! existing registration is never replaced (409), and the configuration
//! must come from the issuer's own origin (scheme, host and port).

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Lti, Refusal};
use crate::store::{LinkUse, PlatformRow};

/// Spent and expired links are kept this long (so the log can say "used"
/// rather than "unknown"), then pruned.
const KEEP_DEAD_LINKS_MS: i64 = 7 * 86_400_000;

/// What a registration page says about every network failure: the same
/// words for a refused address, a closed port, a timeout, an error status
/// or a body that is not a configuration, so the page tells a prober nothing.
pub const UNREACHABLE: &str = "labpool could not read the platform's configuration or register with it. \
     The labpool administrator finds the reason in labpool's log.";

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

/// A new registration link: shown once, only its hash is stored.
#[derive(Debug, Clone)]
pub struct RegistrationLink {
    pub url: String,
    pub expires_at: i64,
}

fn link_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Why a registration was refused, as the log says it (the page says less).
fn unreachable(what: &str, e: impl std::fmt::Display) -> Refusal {
    tracing::warn!(error = %e, "dynamic registration: {what} failed");
    Refusal::platform_unreachable(UNREACHABLE)
}

impl Lti {
    /// Makes a one-time registration link for `created_by` (a token name),
    /// live for `lti.registration.link_ttl`.
    pub async fn registration_link(
        &self,
        created_by: &str,
        now: i64,
    ) -> Result<RegistrationLink, crate::store::StoreError> {
        make_link(
            &self.store,
            &self.base_url,
            self.link_ttl_ms,
            created_by,
            now,
        )
        .await
    }

    /// Registers the platform that opened the link `secret`. The link is
    /// spent before anything is fetched, so one link makes at most one
    /// attempt, successful or not.
    pub async fn register(
        &self,
        secret: &str,
        start: RegistrationStart,
        now: i64,
    ) -> Result<Registered, Refusal> {
        let config_url = start
            .openid_configuration
            .filter(|u| !u.is_empty())
            .ok_or_else(|| Refusal::bad_launch("registration without openid_configuration"))?;
        match self
            .store
            .spend_registration_link(&link_hash(secret), now)
            .await?
        {
            LinkUse::Spent => {}
            used => {
                let why = match used {
                    LinkUse::Used => "this registration link was used already",
                    LinkUse::Expired => "this registration link has expired",
                    _ => "no such registration link",
                };
                return Err(Refusal::new(
                    axum::http::StatusCode::NOT_FOUND,
                    "link",
                    format!(
                        "{why}; make a new one with `labpool lti registration-link` or on the dashboard"
                    ),
                ));
            }
        }
        let token = start.registration_token.as_deref();
        let config_origin = self
            .egress
            .check_url(&config_url)
            .map_err(|e| unreachable("the platform configuration", e))?
            .origin();
        let platform: PlatformConfiguration = self
            .egress
            .get_json(&config_url, token)
            .await
            .map_err(|e| unreachable("reading the platform configuration", e))
            .and_then(|v| {
                serde_json::from_value(v)
                    .map_err(|e| unreachable("reading the platform configuration", e))
            })?;
        // The configuration must come from the issuer's own origin: scheme,
        // host and port. Otherwise any page could claim to be, say, Canvas,
        // and another port of the LMS's host could claim to be the LMS.
        let issuer_origin = url::Url::parse(&platform.issuer).ok().map(|u| u.origin());
        if issuer_origin.as_ref() != Some(&config_origin) || !config_origin.is_tuple() {
            return Err(Refusal::forged(format!(
                "the configuration at {config_url} names issuer {}, which is not its origin \
                 ({}): scheme, host and port must match",
                platform.issuer,
                config_origin.ascii_serialization()
            )));
        }
        // Every URL labpool will fetch later must pass the same checks now.
        for (what, url) in [
            ("registration_endpoint", &platform.registration_endpoint),
            ("jwks_uri", &platform.jwks_uri),
        ] {
            self.egress
                .check_url(url)
                .map_err(|e| unreachable(&format!("checking the platform's {what}"), e))?;
        }
        self.refuse_takeover(&platform.issuer, None, &platform.jwks_uri)
            .await?;
        let product = platform
            .lti
            .as_ref()
            .and_then(|l| l.get("product_family_code"))
            .and_then(Value::as_str)
            .map(str::to_owned);

        let answer = self
            .egress
            .post_json(
                &platform.registration_endpoint,
                token,
                &self.client_metadata(),
            )
            .await
            .map_err(|e| unreachable("posting the registration", e))?;
        let client_id = answer
            .get("client_id")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty() && c.len() <= 256)
            .ok_or_else(|| unreachable("reading the registration's answer", "no client_id"))?
            .to_owned();
        let deployment_id = answer
            .get("https://purl.imsglobal.org/spec/lti-tool-configuration")
            .and_then(|c| c.get("deployment_id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        self.refuse_takeover(&platform.issuer, Some(&client_id), &platform.jwks_uri)
            .await?;
        let added = self
            .store
            .insert_platform(&PlatformRow {
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
        if !added {
            // Another registration of the same pair won a race with this one.
            return Err(already_registered(&platform.issuer, &client_id));
        }
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

    /// Refuses (409) a registration that would replace or sit beside an
    /// existing one with other keys: the same issuer and client id at all,
    /// or the same issuer with another JWKS URL (its launches would verify
    /// with keys the issuer never published).
    async fn refuse_takeover(
        &self,
        issuer: &str,
        client_id: Option<&str>,
        jwks_url: &str,
    ) -> Result<(), Refusal> {
        let existing = self.registry.find_fresh(issuer).await?;
        if let Some(client_id) = client_id
            && existing.iter().any(|r| r.platform.client_id == client_id)
        {
            return Err(already_registered(issuer, client_id));
        }
        if let Some(other) = existing.iter().find(|r| r.platform.jwks_url != jwks_url) {
            return Err(Refusal::new(
                axum::http::StatusCode::CONFLICT,
                "conflict",
                format!(
                    "issuer {issuer} is registered already (client id {}) with its keys at {}, \
                     and this registration names {jwks_url}. To replace it on purpose, remove it \
                     first: `labpool lti platform remove {issuer} {}` (or edit lti.platforms)",
                    other.platform.client_id, other.platform.jwks_url, other.platform.client_id
                ),
            ));
        }
        Ok(())
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

/// Makes a one-time registration link on `store` for labpool at
/// `base_url` (no trailing slash), live for `ttl_ms`: `labpool lti
/// registration-link` and the dashboard's button.
pub async fn make_link(
    store: &crate::store::Store,
    base_url: &str,
    ttl_ms: i64,
    created_by: &str,
    now: i64,
) -> Result<RegistrationLink, crate::store::StoreError> {
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let expires_at = now + ttl_ms;
    store
        .prune_registration_links(now - KEEP_DEAD_LINKS_MS)
        .await?;
    store
        .insert_registration_link(&link_hash(&secret), created_by, now, expires_at)
        .await?;
    tracing::info!(created_by, expires_at, "registration link made");
    Ok(RegistrationLink {
        url: format!("{base_url}/lti/register/{secret}"),
        expires_at,
    })
}

fn already_registered(issuer: &str, client_id: &str) -> Refusal {
    Refusal::new(
        axum::http::StatusCode::CONFLICT,
        "conflict",
        format!(
            "issuer {issuer} with client id {client_id} is registered already; an existing \
             registration is never replaced. To replace it on purpose: \
             `labpool lti platform remove {issuer} {client_id}`, then register again"
        ),
    )
}
