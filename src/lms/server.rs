//! The platform: its state, its HTTP endpoints, and the admin/teacher
//! actions tests drive (register a tool, prepare a launch, run a dynamic
//! registration).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context as _, bail};
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use url::Url;

use super::browser::Browser;
use super::forms::escape_html;
use super::keys::{SigningKey, random_hex};
use super::launch::{self, LTI, LTI_DL, Launch, MessageKind, TokenContext};
use super::registration::{self, TOOL_CONFIGURATION};

/// A tool as an LMS administrator registers it: the values a platform needs
/// to launch it and to check what it sends back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRegistration {
    /// The client id the platform knows the tool by (`aud` of id_tokens).
    pub client_id: String,
    /// The deployment id of this installation.
    pub deployment_id: String,
    /// The tool's OIDC login initiation URL.
    pub login_url: String,
    /// Where id_tokens may be posted; `/authorize` refuses any other.
    pub redirect_uris: Vec<String>,
    /// The tool's JWKS, for its deep-linking responses.
    pub jwks_url: String,
    /// The default launch target.
    pub target_link_uri: String,
}

impl ToolRegistration {
    /// labpool itself as the tool, served at `base`: its LTI routes under
    /// `/lti/` (login, launch, JWKS).
    pub fn labpool_at(base: &str, client_id: &str, deployment_id: &str) -> ToolRegistration {
        ToolRegistration {
            client_id: client_id.into(),
            deployment_id: deployment_id.into(),
            login_url: format!("{base}/lti/login"),
            redirect_uris: vec![format!("{base}/lti/launch")],
            jwks_url: format!("{base}/lti/jwks"),
            target_link_uri: format!("{base}/lti/launch"),
        }
    }
}

/// A tool the platform registered through Dynamic Registration.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredTool {
    /// The client id the platform assigned (`lms-client-<hex>`).
    pub client_id: String,
    /// The deployment id the platform assigned.
    pub deployment_id: String,
    /// The registration as the platform stored it.
    pub registration: ToolRegistration,
    /// The `target_link_uri` of the tool's `LtiDeepLinkingRequest` message.
    pub deep_linking_target: Option<String>,
    /// The client metadata the tool posted.
    pub request: Value,
    /// What the platform answered.
    pub response: Value,
}

/// One request for the OpenID configuration, for tests checking that the
/// tool presented its registration token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigurationRequest {
    /// The bearer token presented, if any.
    pub bearer: Option<String>,
    /// Whether it was a live registration token (false when absent).
    pub token_live: bool,
    /// Whether the platform answered (it refuses a present but dead token).
    pub served: bool,
}

/// An id_token the platform handed out at `/authorize`.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuedToken {
    /// The tool's client id.
    pub client_id: String,
    /// The nonce the tool sent in its authentication request.
    pub nonce: String,
    /// The state the tool sent (echoed next to the id_token).
    pub state: String,
    /// The redirect URI the token was posted to.
    pub redirect_uri: String,
    /// The `kid` of its header (none for the no-kid forgery).
    pub kid: Option<String>,
    /// The token as sent.
    pub id_token: String,
    /// Its claims (after any claim forgery).
    pub claims: Value,
}

#[derive(Debug, Clone)]
struct Tool {
    registration: ToolRegistration,
    deep_linking_target: Option<String>,
}

#[derive(Debug)]
enum RegistrationToken {
    Live,
    Used(Box<RegisteredTool>),
}

#[derive(Debug, Clone)]
struct DeepLinkRequest {
    client_id: String,
    deployment_id: String,
}

#[derive(Debug, Default)]
struct Records {
    /// Signing keys, oldest first; the last is current.
    keys: Vec<SigningKey>,
    tools: Vec<Tool>,
    /// Prepared launches by `lti_message_hint`.
    pending: HashMap<String, Launch>,
    registration_tokens: HashMap<String, RegistrationToken>,
    configuration_requests: Vec<ConfigurationRequest>,
    issued: Vec<IssuedToken>,
    /// Deep-linking requests sent, by their `data`, awaiting a response.
    deep_link_requests: HashMap<String, DeepLinkRequest>,
    deep_link_responses: Vec<Value>,
    refusals: Vec<String>,
}

impl Records {
    fn tool(&self, client_id: &str) -> Option<&Tool> {
        self.tools
            .iter()
            .rev()
            .find(|t| t.registration.client_id == client_id)
    }

    fn current_key(&self) -> &SigningKey {
        self.keys.last().expect("a platform always has a key")
    }
}

struct Shared {
    issuer: String,
    guid: String,
    http: reqwest::Client,
    records: Mutex<Records>,
}

impl Shared {
    /// The state of a platform at `issuer`, with a fresh signing key.
    async fn new(issuer: String) -> anyhow::Result<Arc<Shared>> {
        let key = tokio::task::spawn_blocking(SigningKey::generate).await??;
        Ok(Arc::new(Shared {
            issuer,
            guid: random_hex(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(std::time::Duration::from_secs(10))
                .build()?,
            records: Mutex::new(Records {
                keys: vec![key],
                ..Records::default()
            }),
        }))
    }

    fn records(&self) -> MutexGuard<'_, Records> {
        self.records.lock().expect("platform state lock")
    }

    /// Records a refusal and builds the 400 answer naming it.
    fn refuse(&self, endpoint: &str, reason: String) -> Response {
        tracing::debug!(endpoint, %reason, "test platform refused");
        self.records()
            .refusals
            .push(format!("{endpoint}: {reason}"));
        let body = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Refused by the platform</title></head>\
             <body><h1>Refused by the platform</h1><p id=\"platform-error\">{}</p></body></html>",
            escape_html(&reason)
        );
        (StatusCode::BAD_REQUEST, Html(body)).into_response()
    }
}

/// Stops the server when the last [`Platform`] clone goes away.
struct Server {
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.get_mut().ok().and_then(Option::take) {
            let _ = stop.send(());
        }
    }
}

/// A running LTI 1.3 platform, on a loopback port of its own
/// ([`start`](Self::start)) or nested in another server's router
/// ([`mounted`](Self::mounted)). Cheap to clone; clones share state; a
/// server of its own stops when the last clone is dropped or on
/// [`shutdown`](Self::shutdown).
#[derive(Clone)]
pub struct Platform {
    shared: Arc<Shared>,
    server: Arc<Server>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("issuer", &self.shared.issuer)
            .finish_non_exhaustive()
    }
}

impl Platform {
    /// Binds `127.0.0.1:0`, generates a signing key and serves. Returns once
    /// the socket is bound, so the platform answers as soon as this returns.
    pub async fn start() -> anyhow::Result<Platform> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the test platform")?;
        let port = listener.local_addr()?.port();
        let shared = Shared::new(format!("http://127.0.0.1:{port}")).await?;
        let app = router(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(error) = serve.await {
                tracing::warn!(%error, "test platform server failed");
            }
        });
        Ok(Platform {
            shared,
            server: Arc::new(Server {
                stop: Mutex::new(Some(stop)),
                task: Mutex::new(Some(task)),
            }),
        })
    }

    /// A platform served by someone else's server: its endpoints are
    /// [`router`](Self::router), which the caller nests at `issuer` (an
    /// absolute URL without a trailing slash, such as
    /// `http://127.0.0.1:8080/dev/lms`). Generates a signing key; binds
    /// nothing, and [`shutdown`](Self::shutdown) does nothing.
    pub async fn mounted(issuer: impl Into<String>) -> anyhow::Result<Platform> {
        let issuer = issuer.into();
        let parsed = Url::parse(&issuer).with_context(|| format!("issuer {issuer:?}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || issuer.ends_with('/') {
            bail!("issuer {issuer:?} must be an http(s) URL without a trailing slash");
        }
        Ok(Platform {
            shared: Shared::new(issuer).await?,
            server: Arc::new(Server {
                stop: Mutex::new(None),
                task: Mutex::new(None),
            }),
        })
    }

    /// The platform's endpoints (`/jwks`, `/authorize`, …), for nesting at
    /// the path of its issuer (see [`mounted`](Self::mounted)).
    pub fn router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        routes().with_state(self.shared.clone())
    }

    /// Stops serving (gracefully: requests in flight finish) and waits for
    /// the server to end. Later requests are refused at the socket.
    pub async fn shutdown(&self) {
        let stop = self.server.stop.lock().expect("server lock").take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        let task = self.server.task.lock().expect("server lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// The platform's issuer (`iss` of its tokens): `http://127.0.0.1:PORT`,
    /// or the URL it is [`mounted`](Self::mounted) at.
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// OIDC authorization endpoint, where tools send login redirects.
    pub fn auth_url(&self) -> String {
        format!("{}/authorize", self.shared.issuer)
    }

    /// OAuth2 token endpoint (answers `unsupported_grant_type` for now; it
    /// exists for registrations that need a value).
    pub fn token_url(&self) -> String {
        format!("{}/token", self.shared.issuer)
    }

    /// The platform's JWKS.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.shared.issuer)
    }

    /// The OpenID configuration, as given to tools in Dynamic Registration.
    pub fn openid_configuration_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.shared.issuer)
    }

    /// Where tools post deep-linking responses.
    pub fn deep_link_return_url(&self) -> String {
        format!("{}/deep-link/return", self.shared.issuer)
    }

    /// The current signing key's public half as SPKI PEM: what a tool
    /// configured by hand would hold, and the HMAC secret of the
    /// algorithm-confusion forgery.
    pub fn public_key_pem(&self) -> String {
        self.shared
            .records()
            .current_key()
            .public_key_pem()
            .to_owned()
    }

    /// The current signing key's kid.
    pub fn current_kid(&self) -> String {
        self.shared.records().current_key().kid().to_owned()
    }

    /// Makes a new key with a new kid current. Old keys stay in the JWKS,
    /// as platforms keep them published while tokens they signed live.
    pub fn rotate_key(&self) -> anyhow::Result<String> {
        let key = SigningKey::generate()?;
        let kid = key.kid().to_owned();
        self.shared.records().keys.push(key);
        Ok(kid)
    }

    /// Registers a tool by hand, as an LMS administrator would. A later
    /// registration with the same client id replaces the earlier one.
    pub fn register_tool(&self, registration: ToolRegistration) {
        self.shared.records().tools.push(Tool {
            registration,
            deep_linking_target: None,
        });
    }

    /// The registered tool with `client_id`, if any.
    pub fn tool(&self, client_id: &str) -> Option<ToolRegistration> {
        self.shared
            .records()
            .tool(client_id)
            .map(|t| t.registration.clone())
    }

    /// Prepares `launch` (the LMS's Launch button) and returns the tool's
    /// login initiation URL with the third-party-initiated login parameters
    /// (Security Framework §5.1.1.1): `iss`, `login_hint`, `target_link_uri`,
    /// `lti_message_hint`, `client_id`, `lti_deployment_id`.
    ///
    /// # Panics
    /// When `launch.client_id` is not registered: a test set-up error.
    pub fn launch_url(&self, launch: &Launch) -> String {
        let (login_url, fields) = self.login_form(launch);
        let mut url = Url::parse(&login_url).expect("the login URL was parsed at registration");
        url.query_pairs_mut().extend_pairs(fields.iter());
        url.to_string()
    }

    /// [`launch_url`](Self::launch_url) for a POST initiation: the login URL
    /// and the form fields to post to it.
    ///
    /// # Panics
    /// When `launch.client_id` is not registered.
    pub fn login_form(&self, launch: &Launch) -> (String, Vec<(String, String)>) {
        let hint = random_hex();
        let mut records = self.shared.records();
        let tool = records.tool(&launch.client_id).unwrap_or_else(|| {
            panic!(
                "launch for client_id {:?}, which is not registered on the test platform",
                launch.client_id
            )
        });
        let login_url = tool.registration.login_url.clone();
        Url::parse(&login_url).unwrap_or_else(|e| panic!("login URL {login_url:?}: {e}"));
        let target = target_link_uri(tool, launch);
        records.pending.insert(hint.clone(), launch.clone());
        let fields = [
            ("iss", self.shared.issuer.as_str()),
            ("login_hint", &launch.user),
            ("target_link_uri", &target),
            ("lti_message_hint", &hint),
            ("client_id", &launch.client_id),
            ("lti_deployment_id", &launch.deployment_id),
        ];
        let fields = fields
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        (login_url, fields)
    }

    /// A new single-use registration token, live until a registration
    /// succeeds with it.
    pub fn registration_token(&self) -> String {
        let token = random_hex();
        self.shared
            .records()
            .registration_tokens
            .insert(token.clone(), RegistrationToken::Live);
        token
    }

    /// The tool registered with `token`, once it has been.
    pub fn registered_with(&self, token: &str) -> Option<RegisteredTool> {
        match self.shared.records().registration_tokens.get(token) {
            Some(RegistrationToken::Used(tool)) => Some((**tool).clone()),
            _ => None,
        }
    }

    /// Runs Dynamic Registration as Canvas and Moodle do: the admin's
    /// browser opens `tool_url` with `openid_configuration` and a fresh
    /// `registration_token`; the tool fetches the configuration, posts its
    /// metadata to `/register` and answers a page that posts
    /// `org.imsglobal.lti.close` to the LMS window. Returns what the platform
    /// registered during that visit.
    pub async fn register_dynamically(
        &self,
        browser: &Browser,
        tool_url: &str,
    ) -> anyhow::Result<RegisteredTool> {
        let token = self.registration_token();
        let mut url = Url::parse(tool_url).with_context(|| format!("tool URL {tool_url:?}"))?;
        url.query_pairs_mut()
            .append_pair("openid_configuration", &self.openid_configuration_url())
            .append_pair("registration_token", &token);
        let followed = browser.navigate(url.as_str()).await?;
        let page = &followed.page;
        let registered = self.registered_with(&token);
        let Some(registered) = registered else {
            bail!(
                "the tool never completed POST /register (its page: {} {}; platform refusals: {:?})",
                page.status,
                page.body,
                self.refusals()
            );
        };
        if page.status != 200 || !page.body.contains("org.imsglobal.lti.close") {
            bail!(
                "the tool registered but its page does not close the registration window \
                 (org.imsglobal.lti.close): {} {}",
                page.status,
                page.body
            );
        }
        Ok(registered)
    }

    /// Every request for the OpenID configuration, oldest first.
    pub fn configuration_requests(&self) -> Vec<ConfigurationRequest> {
        self.shared.records().configuration_requests.clone()
    }

    /// Every id_token handed out, oldest first.
    pub fn issued_tokens(&self) -> Vec<IssuedToken> {
        self.shared.records().issued.clone()
    }

    /// The `content_items` array of every accepted deep-linking response,
    /// oldest first (an empty array when the tool sent none).
    pub fn deep_link_results(&self) -> Vec<Value> {
        self.deep_link_responses()
            .into_iter()
            .map(|claims| {
                claims
                    .get(format!("{LTI_DL}content_items"))
                    .cloned()
                    .unwrap_or_else(|| json!([]))
            })
            .collect()
    }

    /// The full claims of every accepted deep-linking response.
    pub fn deep_link_responses(&self) -> Vec<Value> {
        self.shared.records().deep_link_responses.clone()
    }

    /// Why the platform refused requests, oldest first, each as
    /// `endpoint: reason`: tests tell a platform refusal from a tool one.
    pub fn refusals(&self) -> Vec<String> {
        self.shared.records().refusals.clone()
    }
}

/// Where a launch lands: the launch's own target, else the tool's
/// deep-linking target for deep linking, else the tool's default.
fn target_link_uri(tool: &Tool, launch: &Launch) -> String {
    launch
        .target_link_uri
        .clone()
        .or_else(|| match launch.kind {
            MessageKind::DeepLinking => tool.deep_linking_target.clone(),
            MessageKind::ResourceLink => None,
        })
        .unwrap_or_else(|| tool.registration.target_link_uri.clone())
}

fn router(shared: Arc<Shared>) -> Router {
    routes().with_state(shared)
}

fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/jwks", get(jwks))
        .route(
            "/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/register", post(register))
        .route("/authorize", get(authorize_get).post(authorize_post))
        .route("/token", post(token))
        .route("/deep-link/return", post(deep_link_return))
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    let keys: Vec<Value> = shared
        .records()
        .keys
        .iter()
        .map(SigningKey::jwk_json)
        .collect();
    (
        [(header::CACHE_CONTROL, "max-age=300")],
        Json(json!({ "keys": keys })),
    )
        .into_response()
}

/// The registration token of an `Authorization: Bearer` header; `Err` when
/// there is an Authorization header that is not a bearer token.
fn bearer(headers: &HeaderMap) -> Result<Option<String>, ()> {
    match headers.get(header::AUTHORIZATION) {
        None => Ok(None),
        Some(value) => {
            let value = value.to_str().map_err(|_| ())?;
            let (scheme, token) = value.split_once(' ').ok_or(())?;
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
                Ok(Some(token.trim().to_owned()))
            } else {
                Err(())
            }
        }
    }
}

fn unauthorized(description: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")],
        Json(json!({"error": "invalid_token", "error_description": description})),
    )
        .into_response()
}

async fn openid_configuration(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let presented = bearer(&headers);
    let mut records = shared.records();
    let (bearer, token_live) = match &presented {
        Ok(Some(token)) => (
            Some(token.clone()),
            matches!(
                records.registration_tokens.get(token),
                Some(RegistrationToken::Live)
            ),
        ),
        Ok(None) => (None, false),
        Err(()) => (
            headers
                .get(header::AUTHORIZATION)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            false,
        ),
    };
    // No token is served (Moodle allows it); a token must be a live one.
    let served = bearer.is_none() || token_live;
    records.configuration_requests.push(ConfigurationRequest {
        bearer,
        token_live,
        served,
    });
    drop(records);
    if !served {
        return unauthorized("not a live registration token");
    }
    Json(registration::openid_configuration(&shared.issuer)).into_response()
}

fn invalid_metadata(description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "invalid_client_metadata", "error_description": description})),
    )
        .into_response()
}

async fn register(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let token = match bearer(&headers) {
        Ok(Some(token)) => token,
        _ => {
            shared
                .records()
                .refusals
                .push("register: no bearer registration token".into());
            return unauthorized("a registration token is required (Authorization: Bearer)");
        }
    };
    if !matches!(
        shared.records().registration_tokens.get(&token),
        Some(RegistrationToken::Live)
    ) {
        shared
            .records()
            .refusals
            .push("register: not a live registration token".into());
        return unauthorized("not a live registration token");
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            let reason = format!("the body is not JSON: {error}");
            shared
                .records()
                .refusals
                .push(format!("register: {reason}"));
            return invalid_metadata(&reason);
        }
    };
    let metadata = match registration::validate(&request) {
        Ok(metadata) => metadata,
        Err(reason) => {
            shared
                .records()
                .refusals
                .push(format!("register: {reason}"));
            return invalid_metadata(&reason);
        }
    };
    let client_id = format!("lms-client-{}", random_hex());
    let deployment_id = format!("lms-deployment-{}", random_hex());
    let mut response = request.clone();
    response["client_id"] = json!(client_id);
    response[TOOL_CONFIGURATION]["deployment_id"] = json!(deployment_id);
    let tool = Tool {
        registration: ToolRegistration {
            client_id: client_id.clone(),
            deployment_id: deployment_id.clone(),
            login_url: metadata.login_url,
            redirect_uris: metadata.redirect_uris,
            jwks_url: metadata.jwks_url,
            target_link_uri: metadata.target_link_uri,
        },
        deep_linking_target: metadata.deep_linking_target,
    };
    let registered = RegisteredTool {
        client_id,
        deployment_id,
        registration: tool.registration.clone(),
        deep_linking_target: tool.deep_linking_target.clone(),
        request,
        response: response.clone(),
    };
    let mut records = shared.records();
    // Checked again under the same lock that spends it: single use.
    match records.registration_tokens.get_mut(&token) {
        Some(state @ RegistrationToken::Live) => {
            *state = RegistrationToken::Used(Box::new(registered))
        }
        _ => {
            drop(records);
            return unauthorized("not a live registration token");
        }
    }
    records.tools.push(tool);
    drop(records);
    Json(response).into_response()
}

async fn token() -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "error": "unsupported_grant_type",
            "error_description": "this test platform issues no access tokens yet",
        })),
    )
        .into_response()
}

async fn authorize_get(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    authorize(&shared, &params)
}

async fn authorize_post(
    State(shared): State<Arc<Shared>>,
    Form(params): Form<HashMap<String, String>>,
) -> Response {
    authorize(&shared, &params)
}

/// The OIDC authentication request (Security Framework §5.1.1.2–5.1.1.3):
/// checks it, mints the id_token and answers the auto-submitting form post
/// to the tool's redirect URI.
fn authorize(shared: &Shared, params: &HashMap<String, String>) -> Response {
    match authorize_checked(shared, params) {
        Ok(page) => Html(page).into_response(),
        Err(reason) => shared.refuse("authorize", reason),
    }
}

fn authorize_checked(shared: &Shared, params: &HashMap<String, String>) -> Result<String, String> {
    let param = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let require = |name: &str| param(name).ok_or_else(|| format!("`{name}` is missing"));
    let expect = |name: &str, wanted: &str| -> Result<(), String> {
        match param(name) {
            Some(value) if value == wanted => Ok(()),
            Some(value) => Err(format!("`{name}` must be {wanted:?}, got {value:?}")),
            None => Err(format!("`{name}` is missing (must be {wanted:?})")),
        }
    };
    expect("scope", "openid")?;
    expect("response_type", "id_token")?;
    expect("response_mode", "form_post")?;
    expect("prompt", "none")?;
    let client_id = require("client_id")?;
    let redirect_uri = require("redirect_uri")?;
    let login_hint = require("login_hint")?;
    let message_hint = require("lti_message_hint")?;
    let nonce = require("nonce")?;
    let state = require("state")?;

    let (launch, key, target, deep_link_data) = {
        let mut records = shared.records();
        let tool = records
            .tool(client_id)
            .ok_or_else(|| format!("`client_id` {client_id:?} is not a registered tool"))?;
        if !tool
            .registration
            .redirect_uris
            .iter()
            .any(|u| u == redirect_uri)
        {
            return Err(format!(
                "`redirect_uri` {redirect_uri:?} is not one of the tool's registered redirect URIs {:?}",
                tool.registration.redirect_uris
            ));
        }
        let launch = records
            .pending
            .get(message_hint)
            .cloned()
            .ok_or_else(|| format!("`lti_message_hint` {message_hint:?} matches no launch"))?;
        if launch.client_id != client_id {
            return Err(format!(
                "`lti_message_hint` belongs to a launch of client {:?}, not {client_id:?}",
                launch.client_id
            ));
        }
        if launch.user != login_hint {
            return Err(format!(
                "`login_hint` {login_hint:?} is not the launching user {:?}",
                launch.user
            ));
        }
        let tool = records.tool(client_id).expect("checked above");
        let target = target_link_uri(tool, &launch);
        let data = (launch.kind == MessageKind::DeepLinking).then(|| {
            let data = random_hex();
            records.deep_link_requests.insert(
                data.clone(),
                DeepLinkRequest {
                    client_id: client_id.to_owned(),
                    deployment_id: launch.deployment_id.clone(),
                },
            );
            data
        });
        (launch, records.current_key().clone(), target, data)
    };

    let return_url = format!("{}/deep-link/return", shared.issuer);
    let ctx = TokenContext {
        issuer: &shared.issuer,
        nonce,
        target_link_uri: &target,
        platform_guid: &shared.guid,
        deep_link: deep_link_data.as_deref().map(|d| (return_url.as_str(), d)),
    };
    let claims = launch::claims(&launch, &ctx, chrono::Utc::now().timestamp());
    let id_token = launch::sign(&key, &launch.forgery, &claims)
        .map_err(|e| format!("minting the id_token failed: {e:#}"))?;
    shared.records().issued.push(IssuedToken {
        client_id: client_id.to_owned(),
        nonce: nonce.to_owned(),
        state: state.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        kid: (launch.forgery != launch::Forgery::NoKid).then(|| key.kid().to_owned()),
        id_token: id_token.clone(),
        claims,
    });
    Ok(format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Launching…</title></head>\n<body>\n\
         <form id=\"lti\" method=\"post\" action=\"{}\" data-autosubmit>\n\
         <input type=\"hidden\" name=\"id_token\" value=\"{}\">\n\
         <input type=\"hidden\" name=\"state\" value=\"{}\">\n\
         <noscript><button type=\"submit\">Continue</button></noscript>\n\
         </form>\n<script>document.getElementById('lti').submit();</script>\n</body></html>\n",
        escape_html(redirect_uri),
        escape_html(&id_token),
        escape_html(state),
    ))
}

async fn deep_link_return(
    State(shared): State<Arc<Shared>>,
    Form(params): Form<HashMap<String, String>>,
) -> Response {
    let Some(jwt) = params.get("JWT") else {
        return shared.refuse("deep-link", "the form has no `JWT` field".into());
    };
    match verify_deep_link(&shared, jwt).await {
        Ok(claims) => {
            let count = claims
                .get(format!("{LTI_DL}content_items"))
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            shared.records().deep_link_responses.push(claims);
            Html(format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>Content added</title></head>\
                 <body><h1>Content added</h1><p id=\"content-added\">{count} item(s) added.</p></body></html>"
            ))
            .into_response()
        }
        Err(reason) => shared.refuse("deep-link", reason),
    }
}

/// Checks a deep-linking response JWT (Deep Linking 2.0 §4.5, Security
/// Framework §5.2): signed RS256 by a key of the sending tool's registered
/// JWKS, addressed to this platform, answering a request this platform sent.
/// On success the request's `data` is spent.
async fn verify_deep_link(shared: &Shared, jwt: &str) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| format!("not a JWT: {e}"))?;
    if header.alg != jsonwebtoken::Algorithm::RS256 {
        return Err(format!("alg must be RS256, got {:?}", header.alg));
    }
    let kid = header.kid.ok_or("the JWT header has no kid")?;
    let unverified: Value = jsonwebtoken::dangerous::insecure_decode_claims(jwt)
        .map_err(|e| format!("unreadable claims: {e}"))?;
    let client_id = unverified
        .get("iss")
        .and_then(Value::as_str)
        .ok_or("`iss` (the tool's client id) is missing")?
        .to_owned();
    let jwks_url = shared
        .records()
        .tool(&client_id)
        .map(|t| t.registration.jwks_url.clone())
        .ok_or_else(|| format!("`iss` {client_id:?} is not a registered client id"))?;
    let jwks: jsonwebtoken::jwk::JwkSet = async {
        shared
            .http
            .get(&jwks_url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }
    .await
    .map_err(|e| format!("fetching the tool's JWKS {jwks_url}: {e}"))?;
    let jwk = jwks
        .find(&kid)
        .ok_or_else(|| format!("kid {kid:?} is not in the tool's JWKS {jwks_url}"))?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| format!("tool JWK: {e}"))?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.leeway = 60;
    validation.set_audience(&[&shared.issuer]);
    validation.set_issuer(&[&client_id]);
    validation.set_required_spec_claims(&["iss", "aud", "exp", "iat"]);
    let claims = jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .map_err(|e| format!("the JWT does not verify: {e}"))?
        .claims;

    if let Some(Value::Array(audiences)) = claims.get("aud")
        && audiences.len() > 1
        && claims.get("azp").and_then(Value::as_str) != Some(shared.issuer.as_str())
    {
        return Err("several audiences but `azp` is not this platform".into());
    }
    let now = chrono::Utc::now().timestamp();
    match claims.get("iat").and_then(Value::as_i64) {
        Some(iat) if iat <= now + 60 => {}
        _ => return Err("`iat` must be a time not in the future".into()),
    }
    if claims
        .get("nonce")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("`nonce` is missing".into());
    }
    let lti = |name: &str| claims.get(format!("{LTI}{name}")).and_then(Value::as_str);
    if lti("message_type") != Some("LtiDeepLinkingResponse") {
        return Err(format!(
            "`message_type` must be \"LtiDeepLinkingResponse\", got {:?}",
            lti("message_type")
        ));
    }
    if lti("version") != Some("1.3.0") {
        return Err(format!(
            "`version` must be \"1.3.0\", got {:?}",
            lti("version")
        ));
    }
    let deployment_id = lti("deployment_id").ok_or("`deployment_id` is missing")?;
    if let Some(items) = claims.get(format!("{LTI_DL}content_items"))
        && !items.is_array()
    {
        return Err("`content_items` must be an array".into());
    }
    let data = claims
        .get(format!("{LTI_DL}data"))
        .and_then(Value::as_str)
        .ok_or("`data` is missing: the platform sent one and expects it echoed")?;
    let mut records = shared.records();
    let request = records
        .deep_link_requests
        .get(data)
        .cloned()
        .ok_or_else(|| format!("`data` {data:?} echoes no open deep-linking request"))?;
    if request.client_id != client_id {
        return Err(format!(
            "`data` belongs to a request to client {:?}, not {client_id:?}",
            request.client_id
        ));
    }
    if request.deployment_id != deployment_id {
        return Err(format!(
            "`deployment_id` {deployment_id:?} is not the request's {:?}",
            request.deployment_id
        ));
    }
    records.deep_link_requests.remove(data);
    Ok(claims)
}
