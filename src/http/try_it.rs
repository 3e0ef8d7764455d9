//! The try-it LMS of `labpool serve --dev`: a real LTI 1.3 platform
//! ([`lms::Platform`](crate::lms::Platform)) nested in labpool's own router
//! at `/dev/lms`, registered with this labpool both ways, and a page at
//! `/dev/` where whoever opens it picks a made-up student and a course and
//! launches, exactly as a student's click in Canvas would: labpool's login
//! initiation, the platform's authorization, the signed id_token posted to
//! `/lti/launch`, the session page.
//!
//! Nothing here exists without `--dev` (the routes are not added, the
//! platform is not registered): see [`routes`]. The registration lives in
//! memory only, next to `lti.platforms` from the configuration file, so a
//! labpool started later without `--dev` does not trust this platform. The
//! platform's signing key is made at each start; labpool fetches the JWKS
//! when a token names a kid it has not seen.
//!
//! Anyone who reaches the page can launch any course as anyone: `--dev`
//! refuses to start when `http.listen` or `lti.base_url` is not a loopback
//! address unless `--dev-allow-remote` says so ([`exposure`]).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use url::{Host, Url};

use super::App;
use crate::config::{Config, PlatformConfig};
use crate::html::escape;
use crate::lms::{Launch, Platform, ToolRegistration};
use crate::lti::COURSE_PARAM;
use crate::store::VmState;

/// Where the page and the platform live under labpool's base URL.
pub const PATH: &str = "/dev";
/// The client id the try-it LMS knows labpool by.
pub const CLIENT_ID: &str = "labpool-try-it";
/// The one deployment of labpool on the try-it LMS.
pub const DEPLOYMENT_ID: &str = "try-it";
/// The LMS course every try-it launch comes from.
const CONTEXT_ID: &str = "try-it";
const CONTEXT_TITLE: &str = "labpool try-it";
/// The longest typed student name.
const MAX_NAME: usize = 80;

/// A made-up student: a stable LMS user id (`sub`) and a display name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Student {
    /// The form value and the end of the user id.
    pub key: &'static str,
    pub name: &'static str,
}

impl Student {
    /// The LMS user id: launches as the same student share a session.
    pub fn user_id(&self) -> String {
        format!("try-it-{}", self.key)
    }
}

/// The students the page offers.
pub const STUDENTS: [Student; 4] = [
    Student {
        key: "ada",
        name: "Ada Lovelace",
    },
    Student {
        key: "alan",
        name: "Alan Turing",
    },
    Student {
        key: "grace",
        name: "Grace Hopper",
    },
    Student {
        key: "katherine",
        name: "Katherine Johnson",
    },
];

/// The user id of a typed name: the same name (whatever its case and
/// surrounding spaces) is always the same student.
pub fn typed_user_id(name: &str) -> String {
    let digest = Sha256::digest(name.trim().to_lowercase().as_bytes());
    format!("try-it-typed-{}", hex::encode(&digest[..8]))
}

#[derive(Debug, thiserror::Error)]
pub enum TryItError {
    #[error(
        "--dev serves a page where anyone who reaches it can launch any course as any student, \
         and {0} reachable beyond this machine; listen on 127.0.0.1 (and leave lti.base_url unset \
         or on localhost), or add --dev-allow-remote if every machine that can reach it is yours"
    )]
    Exposed(String),
    #[error("cannot start the try-it LMS")]
    Platform(#[source] anyhow::Error),
}

/// Why the try-it LMS would be reachable from other machines: the
/// non-loopback addresses among `http.listen` and `lti.base_url`, worded for
/// [`TryItError::Exposed`]; `None` when both are loopback.
pub fn exposure(config: &Config) -> Option<String> {
    let mut exposed = Vec::new();
    let listen = &config.http.listen;
    if !listen.ip().is_loopback() {
        exposed.push(format!("http.listen {listen}"));
    }
    let base = config.base_url();
    let loopback = Url::parse(&base).ok().is_some_and(|u| match u.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    });
    if !loopback {
        exposed.push(format!("lti.base_url {base}"));
    }
    match exposed.len() {
        0 => None,
        1 => Some(format!("{} is", exposed[0])),
        _ => Some(format!("{} are", exposed.join(" and "))),
    }
}

/// The try-it LMS: the platform and what its page needs.
pub struct TryIt {
    platform: Platform,
    base_url: String,
    /// The page's Content-Security-Policy.
    csp: HeaderValue,
    /// labpool's names: the launch must come from one of their origins.
    hosts: super::host::AllowedHosts,
}

impl std::fmt::Debug for TryIt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TryIt")
            .field("issuer", &self.platform.issuer())
            .finish_non_exhaustive()
    }
}

impl TryIt {
    /// Makes the try-it LMS of `config` and registers it with labpool and
    /// labpool with it: the platform knows labpool's login, launch and JWKS
    /// URLs under [`CLIENT_ID`]; `config.lti.platforms` gains the platform
    /// (issuer `<base_url>/dev/lms`, its auth, token and JWKS URLs), ahead of
    /// the file's own. Call before the LTI tool is built from `config`, and
    /// put the result in [`App::try_it`].
    ///
    /// Refuses a `config` whose address is not loopback unless
    /// `allow_remote`; logs a warning either way.
    pub async fn install(
        config: &mut Config,
        allow_remote: bool,
    ) -> Result<Arc<TryIt>, TryItError> {
        let exposed = exposure(config);
        if let (Some(what), false) = (&exposed, allow_remote) {
            return Err(TryItError::Exposed(what.clone()));
        }
        let base = config.base_url();
        let platform = Platform::mounted(format!("{base}{PATH}/lms"))
            .await
            .map_err(TryItError::Platform)?;
        platform.register_tool(ToolRegistration::labpool_at(
            &base,
            CLIENT_ID,
            DEPLOYMENT_ID,
        ));
        config.lti.platforms.insert(
            0,
            PlatformConfig {
                issuer: platform.issuer().to_owned(),
                client_id: CLIENT_ID.into(),
                deployment_ids: vec![DEPLOYMENT_ID.into()],
                auth_login_url: platform.auth_url(),
                token_url: platform.token_url(),
                jwks_url: platform.jwks_url(),
                // Anyone who reaches the page may launch any course anyway;
                // courses need not name a platform that exists only here.
                any_course: true,
            },
        );
        let base_origin = Url::parse(&base)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| base.clone());
        let style_hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE));
        let csp = format!(
            "default-src 'none'; style-src 'sha256-{style_hash}'; base-uri 'none'; \
             form-action 'self' {base_origin}; frame-ancestors 'none'"
        );
        let try_it = TryIt {
            csp: HeaderValue::from_str(&csp).map_err(|e| TryItError::Platform(e.into()))?,
            hosts: super::host::AllowedHosts::from_config(config),
            platform,
            base_url: base,
        };
        tracing::warn!(
            page = %try_it.page_url(),
            "--dev: the try-it LMS is on. Anyone who can open its page can launch any course \
             as any student. For one machine only: never run --dev where others can reach labpool"
        );
        if let Some(what) = exposed {
            tracing::warn!(
                "--dev-allow-remote: {what} reachable beyond this machine; whoever reaches it \
                 can take every warm VM"
            );
        }
        Ok(Arc::new(try_it))
    }

    /// The page: `<base_url>/dev/`.
    pub fn page_url(&self) -> String {
        format!("{}{PATH}/", self.base_url)
    }

    /// The platform (its issuer, keys, the tokens it issued).
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// The launch a click on Launch prepares: a student's resource link
    /// launch of `course` from the try-it LMS course, the course named by
    /// the link's plain custom parameter (which only this registration's
    /// `any_course` lets through: see `Lti::resolve`). One
    /// link per course, so a student's launches of one course share a
    /// session.
    pub fn launch(&self, user_id: &str, name: &str, course: &str) -> Launch {
        let mut launch = Launch::new(
            CLIENT_ID,
            DEPLOYMENT_ID,
            user_id,
            format!("try-it-link-{course}"),
        )
        .in_context(CONTEXT_ID, CONTEXT_TITLE);
        launch.name = Some(name.to_owned());
        launch.custom.insert(
            COURSE_PARAM.into(),
            serde_json::Value::String(course.into()),
        );
        launch
    }

    /// Whether a form post with these headers comes from this page:
    /// `Origin` (or `Sec-Fetch-Site`, `Referer`) must be labpool's own
    /// (`lti.base_url` or an allowed alias), never merely the `Host` the
    /// request names, which a forger sets along with `Origin`. No such
    /// header: not a browser, so not a cross-site form.
    fn same_origin(&self, headers: &HeaderMap) -> bool {
        match super::host::same_origin(&self.hosts, headers) {
            Ok(()) => true,
            Err(why) => {
                tracing::warn!(reason = why, "try-it launch not from the try-it page");
                false
            }
        }
    }
}

/// The try-it routes (`/dev`, `/dev/`, `/dev/launch` and the platform under
/// `/dev/lms`) when `try_it` is on; none at all otherwise, so every `/dev`
/// path is 404 without `--dev`.
pub fn routes(try_it: Option<&Arc<TryIt>>) -> Router<App> {
    let Some(try_it) = try_it else {
        return Router::new();
    };
    Router::new()
        .route(PATH, get(|| async { Redirect::to("/dev/") }))
        .route("/dev/", get(page))
        .route("/dev/launch", post(launch))
        .layer(Extension(try_it.clone()))
        .nest("/dev/lms", try_it.platform.router())
}

/// The page's style, allowed by its hash in the page's CSP.
const STYLE: &str = "
body { font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #1d2433; }
h1 { font-size: 1.4rem; } code { background: #eef1f6; padding: 0 .25rem; border-radius: 3px; }
.banner { background: #fff3cd; border: 2px solid #c98a00; border-radius: 6px; padding: .6rem 1rem; }
fieldset { border: 1px solid #c7cedb; border-radius: 6px; margin: 1rem 0; }
label { display: block; margin: .25rem 0; } .note { color: #5a6478; font-size: .9rem; }
.warm { color: #1a7f37; } .cold { color: #9a6700; }
button { font: inherit; padding: .4rem 1.2rem; margin-right: .5rem; }
dt { font-weight: 600; } dd { margin: 0 0 .4rem 1rem; word-break: break-all; }
";

fn render(title: &str, body: &str) -> String {
    let body = format!(
        "<p class=\"banner\" id=\"banner\" role=\"alert\"><strong>Development only.</strong> \
         This is labpool's try-it LMS (<code>labpool serve --dev</code>): anyone who can open \
         this page can launch any course as any student. Run it on your own machine only.</p>\n\
         {body}"
    );
    crate::html::page(&crate::html::Page {
        title,
        style: Some(STYLE),
        body: &body,
        ..Default::default()
    })
}

/// Try-it pages: never cached (warm counts move), never framed, styles
/// only from the page itself, forms only to labpool, referrers only to
/// labpool.
fn respond(try_it: &TryIt, status: StatusCode, title: &str, body: &str) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::CONTENT_SECURITY_POLICY, try_it.csp.clone()),
            // Not `no-referrer`: under it browsers post `Origin: null`, and
            // the launch wants the page's origin.
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            ),
        ],
        Html(render(title, body)),
    )
        .into_response()
}

async fn page(State(app): State<App>, Extension(try_it): Extension<Arc<TryIt>>) -> Response {
    let try_it = &*try_it;
    let catalog = match app.lti.catalog.get().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "try-it page: the course catalog");
            return respond(
                try_it,
                StatusCode::SERVICE_UNAVAILABLE,
                "labpool try-it LMS",
                "<h1>labpool cannot read its store</h1><p>See labpool's log, then reload.</p>",
            );
        }
    };
    // Warm and booting VMs per course; a dev machine has a handful.
    let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
    match app.lti.store().vms().await {
        Ok(vms) => {
            for vm in vms {
                let c = counts.entry(vm.course).or_default();
                match vm.state {
                    VmState::Warm => c.0 += 1,
                    VmState::Creating | VmState::Booting => c.1 += 1,
                    _ => {}
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "try-it page: VM counts"),
    }

    let mut students = String::new();
    for (i, s) in STUDENTS.iter().enumerate() {
        students.push_str(&format!(
            "<label><input type=\"radio\" name=\"student\" value=\"{key}\" id=\"student-{key}\"{checked}> \
             {name} <span class=\"note\">user id <code>{id}</code></span></label>\n",
            key = escape(s.key),
            name = escape(s.name),
            id = escape(&s.user_id()),
            checked = if i == 0 { " checked" } else { "" },
        ));
    }
    let mut courses = String::new();
    let first_warm = catalog
        .courses
        .iter()
        .position(|c| counts.get(&c.name).is_some_and(|n| n.0 > 0))
        .unwrap_or(0);
    for (i, c) in catalog.courses.iter().enumerate() {
        let (warm, booting) = counts.get(&c.name).copied().unwrap_or_default();
        let state = match (warm, booting) {
            (0, 0) => {
                "<span class=\"cold\">none warm: a launch waits for a VM to boot</span>".to_owned()
            }
            (0, b) => format!("<span class=\"cold\">none warm yet, {b} booting</span>"),
            (w, _) => format!("<span class=\"warm\">{w} warm</span>"),
        };
        courses.push_str(&format!(
            "<label><input type=\"radio\" name=\"course\" value=\"{name}\" id=\"course-{name}\" required{checked}> \
             {title} <code>{name}</code> — <span class=\"count\" id=\"count-{name}\">{state}</span></label>\n",
            name = escape(&c.name),
            title = escape(&c.title),
            checked = if i == first_warm { " checked" } else { "" },
        ));
    }
    if catalog.courses.is_empty() {
        courses.push_str(
            "<p id=\"no-courses\">labpool offers no course yet: its first reconcile pass applies the \
             course folder. <a href=\"./\">Reload</a> in a moment, or see <code>labpool status</code>.</p>\n",
        );
    }
    let p = &try_it.platform;
    let body = format!(
        r#"<h1>Try it: open a lab as a student</h1>
<p>This page is an LMS: a real LTI 1.3 platform registered with this labpool. <strong>Launch</strong> sends your
browser through what a student's click in Canvas or Moodle does: labpool's login, this platform's authorization,
the signed launch, then the terminal of a warm VM. Launching again as the same student and course returns to the
same VM; another student gets a VM of their own.</p>
<form method="post" action="launch">
<fieldset><legend>Student</legend>
{students}<label>Or anyone else: <input type="text" name="name" id="student-name" maxlength="{MAX_NAME}"
 placeholder="a name (used instead of the choice above)"></label>
</fieldset>
<fieldset><legend>Course</legend>
{courses}</fieldset>
<p><button type="submit" id="launch">Launch</button><button type="submit" id="launch-new-tab"
 formtarget="_blank">Launch in a new tab</button> <a href="./">Reload the counts</a></p>
</form>
<details><summary>How this LMS and labpool know each other</summary>
<dl>
<dt>Issuer</dt><dd><code>{issuer}</code></dd>
<dt>Client id, deployment</dt><dd><code>{client}</code>, <code>{deployment}</code></dd>
<dt>Authorization, JWKS</dt><dd><code>{auth}</code><br><code>{jwks}</code></dd>
<dt>labpool's login and launch URLs</dt><dd><code>{base}/lti/login</code><br><code>{base}/lti/launch</code></dd>
<dt>Context, link</dt><dd>LMS course <code>{context}</code>; one link per course, its custom parameter
<code>{param}</code> naming the course (only the try-it LMS may name a course so; on other LMSs a
link opens a course through the placement labpool's Deep Linking signs, or its context)</dd>
</dl>
<p class="note">The platform's signing key is new at each start; the registration exists only while
<code>labpool serve --dev</code> runs.</p>
</details>"#,
        issuer = escape(p.issuer()),
        client = escape(CLIENT_ID),
        deployment = escape(DEPLOYMENT_ID),
        auth = escape(&p.auth_url()),
        jwks = escape(&p.jwks_url()),
        base = escape(&try_it.base_url),
        context = escape(CONTEXT_ID),
        param = escape(COURSE_PARAM),
    );
    respond(try_it, StatusCode::OK, "labpool try-it LMS", &body)
}

/// The Launch button's form.
#[derive(Debug, Deserialize)]
pub struct LaunchChoice {
    student: Option<String>,
    name: Option<String>,
    course: Option<String>,
}

/// Prepares the launch on the platform and sends the browser to labpool's
/// login initiation (third-party initiated login, as an LMS's link does).
async fn launch(
    State(app): State<App>,
    Extension(try_it): Extension<Arc<TryIt>>,
    headers: HeaderMap,
    Form(choice): Form<LaunchChoice>,
) -> Response {
    let try_it = &*try_it;
    let refuse = |status, what: &str| {
        tracing::warn!(reason = what, "try-it launch refused");
        let body = format!(
            "<h1>Not launched</h1><p id=\"refusal\">{}.</p><p><a href=\"./\">Back to the try-it page</a></p>",
            escape(what)
        );
        respond(try_it, status, "Not launched", &body)
    };
    if !try_it.same_origin(&headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "this launch was posted by another site",
        );
    }
    let typed = choice.name.as_deref().map(str::trim).unwrap_or_default();
    let (user_id, name) = if !typed.is_empty() {
        if typed.chars().count() > MAX_NAME {
            return refuse(StatusCode::BAD_REQUEST, "that name is too long");
        }
        (typed_user_id(typed), typed.to_owned())
    } else {
        match STUDENTS
            .iter()
            .find(|s| Some(s.key) == choice.student.as_deref())
        {
            Some(s) => (s.user_id(), s.name.to_owned()),
            None => return refuse(StatusCode::BAD_REQUEST, "choose a student or type a name"),
        }
    };
    let Some(course) = choice.course.filter(|c| !c.is_empty()) else {
        return refuse(StatusCode::BAD_REQUEST, "choose a course");
    };
    match app.lti.catalog.get().await {
        Ok(catalog) if catalog.course(&course).is_some() => {}
        Ok(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("labpool does not offer a course {course:?} (any more)"),
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "try-it launch: the course catalog");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "labpool cannot read its store",
            );
        }
    }
    tracing::info!(%course, user = %user_id, "try-it launch");
    let url = try_it
        .platform
        .launch_url(&try_it.launch(&user_id, &name, &course));
    ([(header::CACHE_CONTROL, "no-store")], Redirect::to(&url)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_of(listen: &str, base_url: Option<&str>) -> Config {
        let mut config = Config::default();
        config.http.listen = listen.parse().expect("an address and port");
        config.lti.base_url = base_url.map(Into::into);
        config
    }

    #[test]
    fn loopback_addresses_are_not_exposed() {
        for (listen, base) in [
            ("127.0.0.1:8080", None),
            ("127.0.0.1:8080", Some("http://localhost:8080")),
            ("[::1]:8080", None),
            ("127.0.0.2:9000", Some("http://[::1]:9000/")),
        ] {
            assert_eq!(
                exposure(&config_of(listen, base)),
                None,
                "{listen} {base:?}"
            );
        }
    }

    #[test]
    fn other_addresses_are_exposed_and_named() {
        assert_eq!(
            exposure(&config_of("0.0.0.0:8080", None)).as_deref(),
            Some("http.listen 0.0.0.0:8080 and lti.base_url http://0.0.0.0:8080 are")
        );
        assert_eq!(
            exposure(&config_of(
                "127.0.0.1:8080",
                Some("https://labs.example.edu")
            ))
            .as_deref(),
            Some("lti.base_url https://labs.example.edu is")
        );
        assert_eq!(
            exposure(&config_of(
                "192.168.1.5:8080",
                Some("http://localhost:8080")
            ))
            .as_deref(),
            Some("http.listen 192.168.1.5:8080 is")
        );
    }

    #[tokio::test]
    async fn install_registers_the_platform_ahead_of_the_files_or_refuses() {
        let mut exposed = config_of("0.0.0.0:8080", None);
        match TryIt::install(&mut exposed, false).await {
            Err(TryItError::Exposed(what)) => assert!(what.contains("0.0.0.0"), "{what}"),
            other => panic!("not refused: {other:?}"),
        }
        assert!(exposed.lti.platforms.is_empty());

        let mut config = config_of("127.0.0.1:8080", None);
        config.lti.platforms.push(PlatformConfig {
            issuer: "https://canvas.example.edu".into(),
            client_id: "1".into(),
            deployment_ids: vec!["d".into()],
            auth_login_url: "https://canvas.example.edu/auth".into(),
            token_url: "https://canvas.example.edu/token".into(),
            jwks_url: "https://canvas.example.edu/jwks".into(),
            any_course: false,
        });
        let try_it = TryIt::install(&mut config, false).await.unwrap();
        assert_eq!(try_it.page_url(), "http://127.0.0.1:8080/dev/");
        let registered = &config.lti.platforms[0];
        assert_eq!(registered.issuer, "http://127.0.0.1:8080/dev/lms");
        assert_eq!(registered.client_id, CLIENT_ID);
        assert_eq!(registered.deployment_ids, [DEPLOYMENT_ID]);
        // Only the try-it LMS launches courses that do not name it.
        assert!(registered.any_course && !config.lti.platforms[1].any_course);
        assert_eq!(
            registered.auth_login_url,
            "http://127.0.0.1:8080/dev/lms/authorize"
        );
        assert_eq!(registered.jwks_url, "http://127.0.0.1:8080/dev/lms/jwks");
        assert_eq!(config.lti.platforms.len(), 2);
        let tool = try_it
            .platform()
            .tool(CLIENT_ID)
            .expect("labpool registered");
        assert_eq!(tool.login_url, "http://127.0.0.1:8080/lti/login");
        assert_eq!(tool.redirect_uris, ["http://127.0.0.1:8080/lti/launch"]);
        assert_eq!(tool.jwks_url, "http://127.0.0.1:8080/lti/jwks");

        // Anywhere, when the user insists.
        let mut exposed = config_of("0.0.0.0:8080", Some("https://labs.example.edu/"));
        let try_it = TryIt::install(&mut exposed, true).await.unwrap();
        assert_eq!(
            try_it.platform().issuer(),
            "https://labs.example.edu/dev/lms"
        );
    }

    #[test]
    fn typed_names_are_stable_students() {
        assert_eq!(
            typed_user_id("Edsger Dijkstra"),
            typed_user_id("  edsger dijkstra ")
        );
        assert_ne!(
            typed_user_id("Edsger Dijkstra"),
            typed_user_id("Barbara Liskov")
        );
        assert!(typed_user_id("x").starts_with("try-it-typed-"));
    }

    #[test]
    fn the_style_is_what_the_csp_hash_allows() {
        let html = render("t", "");
        assert!(html.contains(&format!("<style>{STYLE}</style>")));
    }
}
