//! labpool as an LTI 1.3 tool: OIDC login, launch, JWKS, Deep Linking and
//! Dynamic Registration. The HTTP handlers (`http::lti`) only translate
//! between requests and these functions.
//!
//! A launch, in order: `login` records a state and a nonce and sends the
//! browser to the platform; the platform posts back a signed id_token;
//! `verify` checks everything the token says; `launch` proves the browser is
//! the one that started the login (state cookie, or the platform's storage)
//! and then, in one store transaction, uses the login up and claims a VM.

pub mod catalog;
pub mod deep_link;
pub mod egress;
pub mod jwks;
pub mod keys;
pub mod launch;
pub mod launch_queue;
pub mod login;
pub mod pages;
pub mod placement;
pub mod platforms;
pub mod register;
pub mod roles;
pub mod verify;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use crate::config::Config;
use crate::session_token::SessionTokens;
use crate::store::{Store, StoreError};

pub use launch::{LaunchForm, LaunchResult, WaitStatus};
pub use login::{LoginRequest, LoginStart};

/// The custom parameter naming the course (set by Deep Linking, or by hand).
pub const COURSE_PARAM: &str = "labpool_course";

/// How long the tool keys are trusted before the store is read again (a
/// rotation by another process shows within this).
const KEYS_TTL: Duration = Duration::from_secs(30);

/// Why a launch is refused: logged with `reason`, shown to the student as a
/// page with `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    /// A short word for logs and metrics: `forged`, `expired`, `replayed`…
    pub kind: &'static str,
    pub reason: String,
    /// A URL that retries the launch where it can work (a new window).
    pub retry: Option<String>,
    /// Seconds to send as `Retry-After` (a refusal for load, not for the
    /// request itself).
    pub retry_after: Option<u64>,
}

impl Refusal {
    pub(crate) fn new(
        status: StatusCode,
        kind: &'static str,
        reason: impl Into<String>,
    ) -> Refusal {
        Refusal {
            status,
            kind,
            reason: reason.into(),
            retry: None,
            retry_after: None,
        }
    }
    pub fn forged(reason: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::UNAUTHORIZED, "forged", reason)
    }
    pub fn expired(reason: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::UNAUTHORIZED, "expired", reason)
    }
    pub fn replayed(reason: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::UNAUTHORIZED, "replayed", reason)
    }
    pub fn state(reason: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::UNAUTHORIZED, "state", reason)
    }
    pub fn unknown_platform(reason: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::FORBIDDEN, "unregistered", reason)
    }
    pub fn bad_launch(reason: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, "invalid", reason)
    }
    pub fn platform_unreachable(reason: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_GATEWAY, "platform-unreachable", reason)
    }
    /// The launch's roles may not do what it asks (a learner's Deep
    /// Linking request).
    pub fn role(reason: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::FORBIDDEN, "role", reason)
    }
    /// The course does not let this platform, deployment or link launch it.
    pub fn course_scope(reason: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::FORBIDDEN, "course-scope", reason)
    }
    pub fn internal(e: impl std::fmt::Display) -> Refusal {
        Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Refusal {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        Refusal::internal(text)
    }
}

/// Everything the LTI endpoints share; one per process, behind an Arc.
pub struct Lti {
    pub(crate) store: Store,
    /// Public URL of labpool, no trailing slash.
    pub(crate) base_url: String,
    /// Its web origin, as browsers send it in `Origin`.
    pub(crate) origin: String,
    /// Origins besides the platforms' that may frame the session page
    /// (`lti.frame_ancestors`).
    pub(crate) frame_ancestors: Vec<String>,
    pub(crate) key_grace_ms: i64,
    /// How long a registration link lives.
    pub(crate) link_ttl_ms: i64,
    /// Requests to addresses strangers choose (Dynamic Registration).
    pub(crate) egress: egress::Egress,
    pub(crate) registry: platforms::Registry,
    pub(crate) platform_keys: jwks::PlatformKeys,
    pub(crate) tool_keys: RwLock<(Instant, keys::ToolKeys)>,
    pub(crate) tokens: SessionTokens,
    /// Signs and opens Deep Linking placements (`labpool_placement`).
    pub(crate) placements: placement::Placements,
    /// `lti.limits.labs_per_user`: labs one user may hold across courses.
    pub(crate) labs_per_user: u32,
    pub(crate) catalog: catalog::Catalogs,
    /// Tells the reconciler a pool needs refilling (a claim, a waiting launch).
    pub(crate) on_demand: Box<dyn Fn() + Send + Sync>,
    pub(crate) launches: launch_queue::LaunchQueue,
    /// The reconciler's metrics: launches are counted here.
    pub(crate) metrics: crate::metrics::Metrics,
    /// Logins started and not launched beyond which new ones are refused.
    pub(crate) max_pending_logins: u32,
}

impl Lti {
    /// Sets up the tool over `store`: opens its secrets with the secret key
    /// (`crate::secret_key`), and creates the first signing key and the
    /// token key on first start. Launches are counted in `metrics`.
    pub async fn new(
        config: &Config,
        store: Store,
        on_demand: Box<dyn Fn() + Send + Sync>,
        metrics: crate::metrics::Metrics,
    ) -> Result<Arc<Lti>, keys::KeyError> {
        let now = crate::reconcile::now_ms();
        // The secrets below are sealed with the secret key (a no-op when the
        // command already opened the store with it).
        crate::secret_key::unlock(config, &store).await?;
        let tool_keys = keys::ToolKeys::load_or_create(&store, now).await?;
        let tokens = SessionTokens::load_or_create(&store, now).await?;
        let placements = placement::Placements::load_or_create(&store, now).await?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("labpool/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client builds");
        let egress =
            egress::Egress::new(egress::AddressPolicy::from_config(&config.lti.registration));
        Ok(Arc::new(Lti {
            registry: platforms::Registry::new(&config.lti.platforms, store.clone()),
            catalog: catalog::Catalogs::new(store.clone()),
            base_url: config.base_url(),
            origin: origin_of(&config.base_url()),
            frame_ancestors: config.lti.frame_ancestors.clone(),
            key_grace_ms: config.lti.key_grace.get().as_millis() as i64,
            link_ttl_ms: config.lti.registration.link_ttl.get().as_millis() as i64,
            egress: egress.clone(),
            platform_keys: jwks::PlatformKeys::new(http.clone(), egress),
            tool_keys: RwLock::new((Instant::now(), tool_keys)),
            tokens,
            placements,
            labs_per_user: config.lti.limits.labs_per_user,
            launches: launch_queue::LaunchQueue::start(store.clone()),
            store,
            on_demand,
            metrics,
            max_pending_logins: config.lti.logins.max_pending,
        }))
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn tokens(&self) -> &SessionTokens {
        &self.tokens
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Where launches land: the OIDC redirect URI and the default target.
    pub fn launch_url(&self) -> String {
        format!("{}/lti/launch", self.base_url)
    }

    pub fn login_url(&self) -> String {
        format!("{}/lti/login", self.base_url)
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/lti/jwks", self.base_url)
    }

    /// Whether `uri` points into this labpool (no open redirects).
    pub(crate) fn is_ours(&self, uri: &str) -> bool {
        uri == self.base_url
            || uri
                .strip_prefix(&self.base_url)
                .is_some_and(|rest| rest.starts_with('/') || rest.starts_with('?'))
    }

    /// The tool keys, read again from the store now and then.
    pub async fn tool_keys(&self) -> Result<keys::ToolKeys, keys::KeyError> {
        {
            let cached = self.tool_keys.read().expect("tool keys");
            if cached.0.elapsed() < KEYS_TTL {
                return Ok(cached.1.clone());
            }
        }
        let fresh = keys::ToolKeys::load(&self.store).await?;
        *self.tool_keys.write().expect("tool keys") = (Instant::now(), fresh.clone());
        Ok(fresh)
    }

    /// The JWKS document: live keys and recently retired ones. Read from
    /// the store every time (platforms ask rarely), so a rotation shows at
    /// once; the signing cache is refreshed on the way.
    pub async fn jwks(&self) -> Result<jsonwebtoken::jwk::JwkSet, keys::KeyError> {
        let now = crate::reconcile::now_ms();
        let fresh = keys::ToolKeys::load(&self.store).await?;
        *self.tool_keys.write().expect("tool keys") = (Instant::now(), fresh.clone());
        Ok(fresh.jwks(now, self.key_grace_ms))
    }
}

/// The web origin of `url` (`scheme://host[:port]`); empty when it has none.
pub(crate) fn origin_of(url: &str) -> String {
    match url::Url::parse(url).map(|u| u.origin()) {
        Ok(origin @ url::Origin::Tuple(..)) => origin.ascii_serialization(),
        _ => String::new(),
    }
}

/// Unix seconds from unix milliseconds.
pub(crate) fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}
