//! The test LTI platform (`labpool::lms`) on its own, against a minimal fake
//! tool written here: proves the platform and browser right before they are
//! used to prove the real tool right.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use labpool::lms::{
    Browser, Forgery, LTI, LTI_DL, Launch, Platform, SigningKey, TOOL_CONFIGURATION,
    ToolRegistration, escape_html,
};
use serde_json::{Value, json};

/// What the fake tool sends as the registration bearer token.
#[derive(Clone, Copy, PartialEq)]
enum Bearer {
    Right,
    Missing,
    Wrong,
}

/// A minimal LTI tool: OIDC login, launch verification with the platform's
/// JWKS, a deep-linking response, and a dynamic registration page.
struct FakeTool {
    base: String,
    platform: String,
    http: reqwest::Client,
    key: SigningKey,
    client_id: Mutex<String>,
    deployment_id: Mutex<String>,
    /// Overrides the redirect URI / client id the login sends to `/authorize`.
    redirect_uri: Mutex<Option<String>>,
    auth_client_id: Mutex<Option<String>>,
    cookie_attributes: Mutex<String>,
    /// Signs deep-linking responses with this key instead (same kid).
    deep_link_key: Mutex<Option<SigningKey>>,
    bearer: Mutex<Bearer>,
    /// Nonce per state, from login to launch.
    logins: Mutex<HashMap<String, String>>,
    /// Each launch: the verified claims, or why the tool refused.
    launches: Mutex<Vec<Result<Value, String>>>,
}

impl FakeTool {
    async fn start(platform: &Platform) -> Arc<FakeTool> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let tool = Arc::new(FakeTool {
            base,
            platform: platform.issuer().to_owned(),
            http: reqwest::Client::new(),
            key: SigningKey::generate().unwrap(),
            client_id: Mutex::new("tool-1".into()),
            deployment_id: Mutex::new("dep-1".into()),
            redirect_uri: Mutex::default(),
            auth_client_id: Mutex::default(),
            cookie_attributes: Mutex::new("Path=/; SameSite=None; Secure; HttpOnly".into()),
            deep_link_key: Mutex::default(),
            bearer: Mutex::new(Bearer::Right),
            logins: Mutex::default(),
            launches: Mutex::default(),
        });
        let app = Router::new()
            .route("/login", get(login))
            .route("/launch", post(launch))
            .route("/jwks", get(jwks))
            .route("/register", get(register))
            .with_state(tool.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        tool
    }

    fn registration(&self) -> ToolRegistration {
        ToolRegistration {
            client_id: self.client_id.lock().unwrap().clone(),
            deployment_id: self.deployment_id.lock().unwrap().clone(),
            login_url: format!("{}/login", self.base),
            redirect_uris: vec![format!("{}/launch", self.base)],
            jwks_url: format!("{}/jwks", self.base),
            target_link_uri: format!("{}/launch", self.base),
        }
    }

    fn launches(&self) -> Vec<Result<Value, String>> {
        self.launches.lock().unwrap().clone()
    }
}

async fn login(
    State(tool): State<Arc<FakeTool>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    assert_eq!(q["iss"], tool.platform);
    for name in [
        "login_hint",
        "target_link_uri",
        "lti_message_hint",
        "client_id",
        "lti_deployment_id",
    ] {
        assert!(q.contains_key(name), "login initiation without {name}");
    }
    let state = format!("state-{}", rand::random::<u64>());
    let nonce = format!("nonce-{}", rand::random::<u64>());
    tool.logins
        .lock()
        .unwrap()
        .insert(state.clone(), nonce.clone());
    let redirect_uri = tool
        .redirect_uri
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_else(|| format!("{}/launch", tool.base));
    let client_id = tool
        .auth_client_id
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_else(|| q["client_id"].clone());
    let mut auth = url::Url::parse(&format!("{}/authorize", tool.platform)).unwrap();
    auth.query_pairs_mut()
        .append_pair("scope", "openid")
        .append_pair("response_type", "id_token")
        .append_pair("response_mode", "form_post")
        .append_pair("prompt", "none")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("login_hint", &q["login_hint"])
        .append_pair("lti_message_hint", &q["lti_message_hint"])
        .append_pair("state", &state)
        .append_pair("nonce", &nonce);
    let cookie = format!(
        "lti_state={state}; {}",
        tool.cookie_attributes.lock().unwrap()
    );
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, auth.to_string()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

async fn launch(
    State(tool): State<Arc<FakeTool>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let result = verify_launch(&tool, &headers, &form).await;
    tool.launches.lock().unwrap().push(result.clone());
    let claims = match result {
        Ok(verified) => verified["claims"].clone(),
        Err(reason) => return (StatusCode::BAD_REQUEST, reason).into_response(),
    };
    if claims[format!("{LTI}message_type")] != "LtiDeepLinkingRequest" {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/session/s1")]).into_response();
    }
    let settings = &claims[format!("{LTI_DL}deep_linking_settings")];
    let response = json!({
        "iss": *tool.client_id.lock().unwrap(),
        "aud": tool.platform,
        "iat": chrono::Utc::now().timestamp(),
        "exp": chrono::Utc::now().timestamp() + 300,
        "nonce": format!("dl-{}", rand::random::<u64>()),
        (format!("{LTI}message_type")): "LtiDeepLinkingResponse",
        (format!("{LTI}version")): "1.3.0",
        (format!("{LTI}deployment_id")): claims[format!("{LTI}deployment_id")],
        (format!("{LTI_DL}data")): settings["data"],
        (format!("{LTI_DL}content_items")): [
            {"type": "ltiResourceLink", "title": "Lab 1", "url": format!("{}/launch", tool.base)}
        ],
    });
    let jwt = match &*tool.deep_link_key.lock().unwrap() {
        Some(other) => {
            let mut header = other.header();
            header.kid = Some(tool.key.kid().to_owned());
            other.sign_with_header(&header, &response).unwrap()
        }
        None => tool.key.sign(&response).unwrap(),
    };
    let return_url = settings["deep_link_return_url"].as_str().unwrap();
    Html(format!(
        "<form method=\"post\" action=\"{}\" data-autosubmit>\
         <input type=\"hidden\" name=\"JWT\" value=\"{}\"></form>",
        escape_html(return_url),
        escape_html(&jwt)
    ))
    .into_response()
}

async fn verify_launch(
    tool: &FakeTool,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<Value, String> {
    let state = form.get("state").ok_or("no state")?;
    let cookie_state = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("lti_state="))
        .next()
        .map(str::to_owned);
    if cookie_state.as_ref() != Some(state) {
        return Err(format!(
            "state cookie {cookie_state:?} does not match {state}"
        ));
    }
    let nonce = tool
        .logins
        .lock()
        .unwrap()
        .remove(state)
        .ok_or("unknown state")?;
    let id_token = form.get("id_token").ok_or("no id_token")?;
    let jwks: JwkSet = tool
        .http
        .get(format!("{}/jwks", tool.platform))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let header = jsonwebtoken::decode_header(id_token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = jwks.find(&kid).ok_or("unknown kid")?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[&*tool.client_id.lock().unwrap()]);
    validation.set_issuer(&[&tool.platform]);
    let claims =
        jsonwebtoken::decode::<Value>(id_token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .map_err(|e| e.to_string())?
            .claims;
    if claims["nonce"] != nonce.as_str() {
        return Err(format!("nonce {} is not {nonce}", claims["nonce"]));
    }
    Ok(json!({"kid": kid, "claims": claims}))
}

async fn jwks(State(tool): State<Arc<FakeTool>>) -> Json<Value> {
    Json(json!({"keys": [tool.key.jwk_json()]}))
}

async fn register(
    State(tool): State<Arc<FakeTool>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let token = match *tool.bearer.lock().unwrap() {
        Bearer::Right => Some(q["registration_token"].clone()),
        Bearer::Missing => None,
        Bearer::Wrong => Some("not-the-token".to_owned()),
    };
    let with_token = |request: reqwest::RequestBuilder| match &token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let config = with_token(tool.http.get(&q["openid_configuration"]))
        .send()
        .await
        .unwrap();
    if !config.status().is_success() {
        return (
            StatusCode::BAD_GATEWAY,
            format!("configuration: {}", config.status()),
        )
            .into_response();
    }
    let config: Value = config.json().await.unwrap();
    assert_eq!(config["issuer"], tool.platform);
    let metadata = json!({
        "application_type": "web",
        "response_types": ["id_token"],
        "grant_types": ["implicit", "client_credentials"],
        "initiate_login_uri": format!("{}/login", tool.base),
        "redirect_uris": [format!("{}/launch", tool.base)],
        "client_name": "fake tool",
        "jwks_uri": format!("{}/jwks", tool.base),
        "token_endpoint_auth_method": "private_key_jwt",
        "scope": "",
        TOOL_CONFIGURATION: {
            "domain": tool.base.trim_start_matches("http://"),
            "target_link_uri": format!("{}/launch", tool.base),
            "claims": ["iss", "sub"],
            "messages": [{"type": "LtiDeepLinkingRequest", "target_link_uri": format!("{}/launch", tool.base)}],
        },
    });
    let endpoint = config["registration_endpoint"].as_str().unwrap();
    let answer = with_token(tool.http.post(endpoint))
        .json(&metadata)
        .send()
        .await
        .unwrap();
    if !answer.status().is_success() {
        return (
            StatusCode::BAD_GATEWAY,
            format!("register: {}", answer.status()),
        )
            .into_response();
    }
    let answer: Value = answer.json().await.unwrap();
    *tool.client_id.lock().unwrap() = answer["client_id"].as_str().unwrap().to_owned();
    *tool.deployment_id.lock().unwrap() = answer[TOOL_CONFIGURATION]["deployment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    Html(
        "<script>(window.opener || window.parent).postMessage({subject: 'org.imsglobal.lti.close'}, '*');</script>",
    )
    .into_response()
}

async fn platform_and_tool() -> (Platform, Arc<FakeTool>) {
    let platform = Platform::start().await.unwrap();
    let tool = FakeTool::start(&platform).await;
    platform.register_tool(tool.registration());
    (platform, tool)
}

#[tokio::test]
async fn a_launch_carries_a_valid_id_token_with_the_tools_nonce() {
    let (platform, tool) = platform_and_tool().await;
    let browser = Browser::new();
    let launch = Launch::new("tool-1", "dep-1", "student-7", "rl-1").in_context("c-1", "Networks");
    let followed = browser.launch_followed(&platform, &launch).await.unwrap();

    assert_eq!(followed.page.status, 303, "{}", followed.page.body);
    assert!(
        followed
            .page
            .location
            .as_deref()
            .unwrap()
            .ends_with("/session/s1")
    );
    assert_eq!(
        followed.hops.len(),
        3,
        "login, authorize, launch: {:?}",
        followed.hops
    );
    assert!(followed.hops[1].starts_with(&platform.auth_url()));

    let launches = tool.launches();
    let verified = launches[0].as_ref().unwrap();
    let claims = &verified["claims"];
    assert_eq!(verified["kid"], platform.current_kid());
    let issued = platform.issued_tokens();
    assert_eq!(issued.len(), 1);
    assert_eq!(claims["nonce"], issued[0].nonce.as_str());
    assert_eq!(claims["sub"], "student-7");
    assert_eq!(claims["aud"], "tool-1");
    assert_eq!(
        claims[format!("{LTI}message_type")],
        "LtiResourceLinkRequest"
    );
    assert_eq!(claims[format!("{LTI}deployment_id")], "dep-1");
    assert_eq!(claims[format!("{LTI}context")]["id"], "c-1");
    assert_eq!(
        claims[format!("{LTI}target_link_uri")],
        format!("{}/launch", tool.base)
    );

    // The state cookie the tool set, with the attributes recorded as sent.
    let cookies = browser.cookies();
    assert_eq!(cookies.len(), 1);
    assert!(cookies[0].is_cross_site_state_cookie());
    assert!(cookies[0].stored);
    assert!(platform.refusals().is_empty());
}

#[tokio::test]
async fn the_browser_withholds_cookies_as_browsers_do() {
    let (platform, tool) = platform_and_tool().await;
    let launch = Launch::new("tool-1", "dep-1", "u", "rl-1");

    // A Lax state cookie does not survive the platform's cross-site post.
    *tool.cookie_attributes.lock().unwrap() = "Path=/; HttpOnly; SameSite=Lax".into();
    let page = Browser::new().launch(&platform, &launch).await.unwrap();
    assert_eq!(page.status, 400);
    assert!(
        tool.launches()[0]
            .as_ref()
            .unwrap_err()
            .contains("state cookie")
    );

    // Nor does any cookie when third-party cookies are blocked.
    *tool.cookie_attributes.lock().unwrap() = "Path=/; SameSite=None; Secure; HttpOnly".into();
    let browser = Browser::new().with_cookies(false);
    let page = browser.launch(&platform, &launch).await.unwrap();
    assert_eq!(page.status, 400);
    assert!(tool.launches()[1].as_ref().unwrap_err().contains("None"));
    assert!(!browser.cookies()[0].stored);
}

#[tokio::test]
async fn authorize_refuses_a_wrong_redirect_uri_or_client_id() {
    let (platform, tool) = platform_and_tool().await;
    let launch = Launch::new("tool-1", "dep-1", "u", "rl-1");

    *tool.redirect_uri.lock().unwrap() = Some(format!("{}/elsewhere", tool.base));
    let page = Browser::new().launch(&platform, &launch).await.unwrap();
    assert_eq!(page.status, 400);
    assert!(
        page.url.starts_with(&platform.auth_url()),
        "refused by the platform"
    );
    assert!(page.body.contains("redirect_uri"), "{}", page.body);

    *tool.redirect_uri.lock().unwrap() = None;
    *tool.auth_client_id.lock().unwrap() = Some("unknown-client".into());
    let page = Browser::new().launch(&platform, &launch).await.unwrap();
    assert_eq!(page.status, 400);
    assert!(page.body.contains("not a registered tool"), "{}", page.body);

    let refusals = platform.refusals();
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert!(tool.launches().is_empty());
    assert!(platform.issued_tokens().is_empty());
}

#[tokio::test]
async fn rotation_keeps_the_old_kid_published() {
    let (platform, tool) = platform_and_tool().await;
    let jwks = |platform: Platform| async move {
        let set: Value = reqwest::get(platform.jwks_url())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                assert_eq!(k["kty"], "RSA");
                assert_eq!(k["alg"], "RS256");
                assert_eq!(k["use"], "sig");
                assert!(k["n"].is_string() && k["e"].is_string());
                k["kid"].as_str().unwrap().to_owned()
            })
            .collect::<Vec<_>>()
    };
    let old = platform.current_kid();
    assert_eq!(jwks(platform.clone()).await, vec![old.clone()]);
    let new = platform.rotate_key().unwrap();
    assert_ne!(new, old);
    assert_eq!(jwks(platform.clone()).await, [old, new.clone()]);

    let launch = Launch::new("tool-1", "dep-1", "u", "rl-1");
    let page = Browser::new().launch(&platform, &launch).await.unwrap();
    assert_eq!(page.status, 303);
    assert_eq!(tool.launches()[0].as_ref().unwrap()["kid"], new.as_str());
}

#[tokio::test]
async fn forged_tokens_are_refused_by_a_verifying_tool() {
    let (platform, tool) = platform_and_tool().await;
    let forgeries = [
        Forgery::WrongKey,
        Forgery::AlgNone,
        Forgery::Hs256WithPublicKey,
        Forgery::Expired,
        Forgery::Claims(json!({"aud": "someone-else"})),
        Forgery::Nonce("made-up".into()),
        Forgery::NoKid,
    ];
    for (i, forgery) in forgeries.into_iter().enumerate() {
        let launch = Launch::new("tool-1", "dep-1", "u", "rl-1").forged(forgery.clone());
        let page = Browser::new().launch(&platform, &launch).await.unwrap();
        assert_eq!(page.status, 400, "{forgery:?}");
        assert!(tool.launches()[i].is_err(), "{forgery:?}");
    }
}

#[tokio::test]
async fn dynamic_registration_registers_the_tool() {
    let platform = Platform::start().await.unwrap();
    let tool = FakeTool::start(&platform).await;
    let browser = Browser::new();
    let registered = platform
        .register_dynamically(&browser, &format!("{}/register", tool.base))
        .await
        .unwrap();
    assert!(registered.client_id.starts_with("lms-client-"));
    assert_eq!(*tool.client_id.lock().unwrap(), registered.client_id);
    assert_eq!(
        *tool.deployment_id.lock().unwrap(),
        registered.deployment_id
    );
    assert_eq!(
        registered.registration.login_url,
        format!("{}/login", tool.base)
    );
    assert_eq!(
        registered.response[TOOL_CONFIGURATION]["deployment_id"],
        registered.deployment_id.as_str()
    );
    let requests = platform.configuration_requests();
    assert!(
        requests.iter().all(|r| r.token_live && r.served),
        "{requests:?}"
    );

    // The registered tool launches, deep linking included; its deep-linking
    // response is accepted and recorded.
    let launch =
        Launch::new(&registered.client_id, &registered.deployment_id, "t", "").deep_linking();
    let followed = browser.launch_followed(&platform, &launch).await.unwrap();
    assert_eq!(followed.page.status, 200, "{}", followed.page.body);
    assert!(followed.page.body.contains("Content added"));
    assert_eq!(
        followed.hops.last().unwrap(),
        &platform.deep_link_return_url()
    );
    let results = platform.deep_link_results();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0][0]["title"], "Lab 1");

    // The token was single use; a live token with bad metadata gets the
    // OAuth error.
    let register = format!("{}/register", platform.issuer());
    let spent = requests[0].bearer.clone().unwrap();
    let again = reqwest::Client::new()
        .post(&register)
        .bearer_auth(&spent)
        .json(&registered.request)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401);
    let invalid = reqwest::Client::new()
        .post(&register)
        .bearer_auth(platform.registration_token())
        .json(&json!({"application_type": "web"}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
    let body: Value = invalid.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client_metadata");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("response_types")
    );
}

#[tokio::test]
async fn registration_refuses_a_missing_or_wrong_bearer_token() {
    let platform = Platform::start().await.unwrap();
    let tool = FakeTool::start(&platform).await;
    let url = format!("{}/register", tool.base);

    *tool.bearer.lock().unwrap() = Bearer::Missing;
    let error = platform
        .register_dynamically(&Browser::new(), &url)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("never completed"), "{error:#}");
    // The configuration is served without a token (as Moodle does), but
    // registering needs one.
    let requests = platform.configuration_requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].served && requests[0].bearer.is_none());
    assert!(platform.refusals()[0].contains("no bearer"));

    *tool.bearer.lock().unwrap() = Bearer::Wrong;
    assert!(
        platform
            .register_dynamically(&Browser::new(), &url)
            .await
            .is_err()
    );
    let requests = platform.configuration_requests();
    assert!(!requests[1].served && !requests[1].token_live);

    // A spent token no longer opens the configuration.
    *tool.bearer.lock().unwrap() = Bearer::Right;
    let registered = platform
        .register_dynamically(&Browser::new(), &url)
        .await
        .unwrap();
    let token = platform.configuration_requests()[2].bearer.clone().unwrap();
    assert_eq!(platform.registered_with(&token), Some(registered));
    let spent = reqwest::Client::new()
        .get(platform.openid_configuration_url())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(spent.status(), 401);
}

#[tokio::test]
async fn deep_link_return_refuses_a_wrong_signature() {
    let (platform, tool) = platform_and_tool().await;
    *tool.deep_link_key.lock().unwrap() = Some(SigningKey::generate().unwrap());
    let launch = Launch::new("tool-1", "dep-1", "teacher", "").deep_linking();
    let followed = Browser::new()
        .launch_followed(&platform, &launch)
        .await
        .unwrap();
    assert_eq!(followed.page.status, 400);
    assert_eq!(followed.page.url, platform.deep_link_return_url());
    assert!(
        followed.page.body.contains("does not verify"),
        "{}",
        followed.page.body
    );
    assert!(platform.deep_link_results().is_empty());

    // The same request answered with the right key is accepted.
    *tool.deep_link_key.lock().unwrap() = None;
    let followed = Browser::new()
        .launch_followed(&platform, &launch)
        .await
        .unwrap();
    assert_eq!(followed.page.status, 200, "{}", followed.page.body);
    assert_eq!(platform.deep_link_results().len(), 1);
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let platform = Platform::start().await.unwrap();
    let url = platform.openid_configuration_url();
    let config: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(config["issuer"], platform.issuer());
    platform.shutdown().await;
    assert!(reqwest::Client::new().get(&url).send().await.is_err());
}

#[tokio::test]
async fn the_browser_repeats_posts_on_307_and_gives_up_on_loops() {
    let app = Router::new()
        .route(
            "/a",
            post(|| async { (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, "b")]) }),
        )
        .route(
            "/b",
            post(|Form(f): Form<HashMap<String, String>>| async move { f["x"].clone() }),
        )
        .route(
            "/loop",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/loop")]) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let browser = Browser::new();
    let first = browser
        .post_form(&format!("{base}/a"), &[("x".into(), "kept".into())])
        .await
        .unwrap();
    assert_eq!(
        first.location.as_deref(),
        Some(format!("{base}/b").as_str())
    );
    let followed = browser.follow(first).await.unwrap();
    assert_eq!(followed.page.method, "POST");
    assert_eq!(followed.page.body, "kept");

    let error = browser.navigate(&format!("{base}/loop")).await.unwrap_err();
    assert!(error.to_string().contains("more than 10 hops"), "{error}");
}
