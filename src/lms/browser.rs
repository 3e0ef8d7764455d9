//! A scripted user agent: what carries an LTI launch between platform and
//! tool in tests.
//!
//! LTI 1.3 is a browser protocol: redirects, cross-site form posts, cookies
//! that must survive them. reqwest alone is not a browser (its cookie store
//! drops `Secure` cookies on `http://127.0.0.1`, it knows nothing of
//! `SameSite`, and it cannot run the auto-submit script), so this wrapper
//! keeps its own cookie jar with browser rules and follows redirects and
//! auto-submitting forms itself, recording every hop for assertions.

use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use reqwest::header::{COOKIE, HeaderMap, LOCATION, SET_COOKIE};
use url::Url;

use super::forms::{Form, parse_forms};
use super::launch::Launch;
use super::server::Platform;

/// One HTTP response as the browser got it (no redirect followed).
#[derive(Debug, Clone)]
pub struct Page {
    /// HTTP status code.
    pub status: u16,
    /// The request method (`GET`, `POST`).
    pub method: String,
    /// The URL that was requested.
    pub url: String,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body as text.
    pub body: String,
    /// `Location`, resolved against [`url`](Self::url), when present.
    pub location: Option<String>,
    /// The form fields posted, to repeat them on a 307/308.
    form: Option<Vec<(String, String)>>,
}

impl Page {
    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The page's forms.
    pub fn forms(&self) -> Vec<Form> {
        parse_forms(&self.body)
    }

    /// The first form marked `data-autosubmit` (one a script posts on load).
    pub fn autosubmit_form(&self) -> Option<Form> {
        self.forms().into_iter().find(|f| f.autosubmit)
    }

    /// Whether this is a redirect the browser would follow.
    pub fn is_redirect(&self) -> bool {
        matches!(self.status, 301 | 302 | 303 | 307 | 308) && self.location.is_some()
    }
}

/// Where following ended, and how it got there.
#[derive(Debug, Clone)]
pub struct Followed {
    /// The last page: neither a redirect nor an auto-submitting form, or a
    /// redirect to one of the browser's stop prefixes.
    pub page: Page,
    /// Every URL requested, in order, the first one included.
    pub hops: Vec<String>,
}

/// A `Set-Cookie` the browser received, as sent, so tests can assert the
/// attributes (`SameSite=None; Secure; HttpOnly` on the LTI state cookie).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieSeen {
    /// The URL whose response set it.
    pub url: String,
    /// Cookie name.
    pub name: String,
    /// Cookie value.
    pub value: String,
    /// Everything after the first `;`, trimmed, as sent.
    pub attributes: String,
    /// Whether the jar kept it (false when cookies are off, when it expired
    /// it, or when browser rules refused it, e.g. `SameSite=None` without
    /// `Secure`).
    pub stored: bool,
}

impl CookieSeen {
    /// The value of attribute `name` (case-insensitive): `Some("")` for a
    /// flag such as `Secure`, `None` when absent.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        attributes(&self.attributes)
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Whether the cookie survives a cross-site form post in a browser:
    /// `SameSite=None`, `Secure` (browsers refuse the former without the
    /// latter) and, for a state cookie, `HttpOnly`.
    pub fn is_cross_site_state_cookie(&self) -> bool {
        self.attribute("SameSite")
            .is_some_and(|v| v.eq_ignore_ascii_case("none"))
            && self.attribute("Secure").is_some()
            && self.attribute("HttpOnly").is_some()
    }
}

fn attributes(raw: &str) -> impl Iterator<Item = (&str, &str)> {
    raw.split(';').filter_map(|part| {
        let part = part.trim();
        if part.is_empty() {
            return None;
        }
        Some(match part.split_once('=') {
            Some((n, v)) => (n.trim(), v.trim()),
            None => (part, ""),
        })
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SameSite {
    Strict,
    Lax,
    None,
}

#[derive(Debug, Clone)]
struct StoredCookie {
    host: String,
    name: String,
    value: String,
    path: String,
    expires: Option<DateTime<Utc>>,
    same_site: SameSite,
}

#[derive(Debug, Default)]
struct Jar {
    cookies: Vec<StoredCookie>,
    seen: Vec<CookieSeen>,
}

/// Whether a request crosses sites, which decides the `SameSite` cookies it
/// carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    /// Typed by the user, or initiated by a page of the same origin.
    SameSite,
    /// A top-level cross-site navigation with GET: Lax cookies go along.
    CrossSiteTopLevelGet,
    /// A top-level cross-site form post: only `SameSite=None` cookies.
    CrossSiteTopLevelPost,
    /// Anything cross-site inside an iframe: only `SameSite=None` cookies,
    /// and only those can be set.
    CrossSiteFramed,
}

/// A test user agent (cheap to clone; clones share the cookie jar).
///
/// Sites: two origins on `127.0.0.1` with different ports count as different
/// sites here (browsers would call them same-site), because in a deployment
/// the LMS and the tool are on different domains and that is the situation
/// the tests must reproduce.
#[derive(Clone)]
pub struct Browser {
    client: reqwest::Client,
    jar: Arc<Mutex<Jar>>,
    cookies_enabled: bool,
    framed_by: Option<String>,
    /// Path prefixes of redirect targets the browser does not follow:
    /// following stops on a redirect whose `Location` path starts with one
    /// of them, and returns that redirect. By default the tool's session and
    /// waiting pages, where a launch hands over to the lab UI.
    pub stop_at: Vec<String>,
    /// Most requests one follow makes before giving up (a loop guard).
    pub max_hops: usize,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("cookies_enabled", &self.cookies_enabled)
            .field("framed_by", &self.framed_by)
            .field("stop_at", &self.stop_at)
            .finish_non_exhaustive()
    }
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    /// A browser with cookies on, browsing top-level (not in an iframe).
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("an HTTP client with default TLS");
        Self {
            client,
            jar: Arc::default(),
            cookies_enabled: true,
            framed_by: None,
            stop_at: vec!["/session/".to_owned(), "/launch/wait/".to_owned()],
            max_hops: 10,
        }
    }

    /// This browser with cookies on or off. Off, it neither stores nor sends
    /// any (it still records what it was sent): the third-party-cookies
    /// blocked case (Safari, Chrome's tracking protection) in an LMS iframe.
    /// Turning cookies off gives a fresh empty jar.
    pub fn with_cookies(mut self, enabled: bool) -> Self {
        self.cookies_enabled = enabled;
        if !enabled {
            self.jar = Arc::default();
        }
        self
    }

    /// This browser running inside an iframe of a page at `top_origin`
    /// (`scheme://host:port`), as LMSs embed tools: every request to another
    /// origin is then cross-site and carries only `SameSite=None` cookies,
    /// and only those can be set by such responses.
    pub fn framed_by(mut self, top_origin: &str) -> Self {
        self.framed_by = Some(origin_of(top_origin).unwrap_or_else(|| top_origin.to_owned()));
        self
    }

    /// Every `Set-Cookie` received so far, oldest first.
    pub fn cookies(&self) -> Vec<CookieSeen> {
        self.jar.lock().expect("jar lock").seen.clone()
    }

    /// The cookie `name` this browser would send to `url` now, if any.
    pub fn cookie_for(&self, url: &str, name: &str) -> Option<String> {
        let url = Url::parse(url).ok()?;
        let jar = self.jar.lock().expect("jar lock");
        applicable(&jar, &url, Context::SameSite)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// One GET, as if typed in the address bar.
    pub async fn get(&self, url: &str) -> anyhow::Result<Page> {
        self.send(reqwest::Method::GET, url, None, None).await
    }

    /// One form POST (`application/x-www-form-urlencoded`), same-site.
    pub async fn post_form(&self, url: &str, fields: &[(String, String)]) -> anyhow::Result<Page> {
        self.send(reqwest::Method::POST, url, Some(fields), None)
            .await
    }

    /// GET `url` and follow (see [`follow`](Self::follow)).
    pub async fn navigate(&self, url: &str) -> anyhow::Result<Followed> {
        let first = self.get(url).await?;
        self.follow(first).await
    }

    /// Follows redirects (301/302/303 as GET, 307/308 keeping method and
    /// body) and auto-submitting forms from `first` until a page that is
    /// neither, or a redirect into [`stop_at`](Self::stop_at). Each request
    /// is initiated by the page before it, which decides its `SameSite`
    /// cookies.
    pub async fn follow(&self, first: Page) -> anyhow::Result<Followed> {
        self.follow_inner(first).await
    }

    /// Launches `launch` the way a user clicking the link in the LMS does:
    /// from a platform page to the tool's login initiation, then through
    /// `/authorize` and the id_token form post to the tool's answer. Stops at
    /// a redirect into [`stop_at`](Self::stop_at) (normally the tool's 303 to
    /// `/session/…`) and returns it.
    pub async fn launch(&self, platform: &Platform, launch: &Launch) -> anyhow::Result<Page> {
        Ok(self.launch_followed(platform, launch).await?.page)
    }

    /// [`launch`](Self::launch), with the hops taken.
    pub async fn launch_followed(
        &self,
        platform: &Platform,
        launch: &Launch,
    ) -> anyhow::Result<Followed> {
        let url = platform.launch_url(launch);
        let issuer = Url::parse(platform.issuer())?;
        let first = self
            .send(reqwest::Method::GET, &url, None, Some(&issuer))
            .await?;
        self.follow(first).await
    }

    async fn follow_inner(&self, first: Page) -> anyhow::Result<Followed> {
        let mut hops = vec![first.url.clone()];
        let mut page = first;
        loop {
            let from = Url::parse(&page.url)?;
            let next = if page.is_redirect() {
                let location = page.location.clone().expect("is_redirect");
                let target = Url::parse(&location)?;
                if self.stop_at.iter().any(|p| target.path().starts_with(p)) {
                    break;
                }
                if matches!(page.status, 307 | 308) {
                    // Repeat the request as it was, body included.
                    let method = reqwest::Method::from_bytes(page.method.as_bytes())?;
                    (method, location, page.form.clone())
                } else {
                    (reqwest::Method::GET, location, None)
                }
            } else if let Some(form) = (page.status == 200)
                .then(|| page.autosubmit_form())
                .flatten()
            {
                let mut action = if form.action.is_empty() {
                    from.clone()
                } else {
                    from.join(&form.action)
                        .with_context(|| format!("form action {:?}", form.action))?
                };
                if form.method == "post" {
                    (reqwest::Method::POST, action.to_string(), Some(form.fields))
                } else {
                    action
                        .query_pairs_mut()
                        .clear()
                        .extend_pairs(form.fields.iter());
                    (reqwest::Method::GET, action.to_string(), None)
                }
            } else {
                break;
            };
            if hops.len() >= self.max_hops {
                bail!(
                    "more than {} hops following {}: {hops:?}",
                    self.max_hops,
                    hops[0]
                );
            }
            let (method, url, fields) = next;
            hops.push(url.clone());
            page = self
                .send(method, &url, fields.as_deref(), Some(&from))
                .await?;
        }
        Ok(Followed { page, hops })
    }

    /// One request, cookies attached and recorded; `initiator` is the page
    /// that caused it (none: the user typed it).
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        form: Option<&[(String, String)]>,
        initiator: Option<&Url>,
    ) -> anyhow::Result<Page> {
        let target = Url::parse(url).with_context(|| format!("URL {url:?}"))?;
        let context = self.context(&target, initiator, &method);
        let mut request = self.client.request(method.clone(), target.clone());
        if let Some(fields) = form {
            request = request.form(fields);
        }
        // Browsers name the origin of the page behind every POST (a form
        // without an initiator here is one on the target's own site).
        if method == reqwest::Method::POST {
            let from = initiator.unwrap_or(&target);
            request = request.header("origin", from.origin().ascii_serialization());
        }
        if self.cookies_enabled {
            let jar = self.jar.lock().expect("jar lock");
            let cookies = applicable(&jar, &target, context);
            if !cookies.is_empty() {
                let header = cookies
                    .iter()
                    .map(|(n, v)| format!("{n}={v}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                request = request.header(COOKIE, header);
            }
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .text()
            .await
            .with_context(|| format!("body of {method} {url}"))?;
        let location = match headers.get(LOCATION) {
            Some(value) => {
                let value = value.to_str().context("non-ASCII Location")?;
                Some(
                    target
                        .join(value)
                        .with_context(|| format!("Location {value:?}"))?
                        .to_string(),
                )
            }
            None => None,
        };
        {
            let mut jar = self.jar.lock().expect("jar lock");
            for value in headers.get_all(SET_COOKIE) {
                let Ok(value) = value.to_str() else { continue };
                self.store(&mut jar, &target, value, context);
            }
        }
        Ok(Page {
            status,
            method: method.to_string(),
            url: target.to_string(),
            headers,
            body,
            location,
            form: form.map(<[_]>::to_vec),
        })
    }

    fn context(&self, target: &Url, initiator: Option<&Url>, method: &reqwest::Method) -> Context {
        let origin = target.origin().ascii_serialization();
        if self.framed_by.as_ref().is_some_and(|top| *top != origin) {
            return Context::CrossSiteFramed;
        }
        match initiator {
            Some(from) if from.origin().ascii_serialization() != origin => {
                if method == reqwest::Method::GET {
                    Context::CrossSiteTopLevelGet
                } else {
                    Context::CrossSiteTopLevelPost
                }
            }
            _ => Context::SameSite,
        }
    }

    fn store(&self, jar: &mut Jar, url: &Url, header: &str, context: Context) {
        let (pair, attrs) = header.split_once(';').unwrap_or((header, ""));
        let Some((name, value)) = pair.split_once('=') else {
            return;
        };
        let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
        let mut seen = CookieSeen {
            url: url.to_string(),
            name: name.clone(),
            value: value.clone(),
            attributes: attrs.trim().to_owned(),
            stored: false,
        };
        let host = url.host_str().unwrap_or_default().to_owned();
        let mut path = None;
        let mut expires = None;
        let mut max_age = None;
        let mut same_site = SameSite::Lax;
        let mut secure = false;
        for (attr, v) in attributes(attrs) {
            match attr.to_ascii_lowercase().as_str() {
                "path" if v.starts_with('/') => path = Some(v.to_owned()),
                "expires" => expires = DateTime::parse_from_rfc2822(v).ok(),
                "max-age" => max_age = v.parse::<i64>().ok(),
                "secure" => secure = true,
                "samesite" => {
                    same_site = match v.to_ascii_lowercase().as_str() {
                        "none" => SameSite::None,
                        "strict" => SameSite::Strict,
                        _ => SameSite::Lax,
                    }
                }
                _ => {}
            }
        }
        let now = Utc::now();
        let expires = match (max_age, expires) {
            (Some(seconds), _) => Some(now + chrono::Duration::seconds(seconds)),
            (None, Some(at)) => Some(at.with_timezone(&Utc)),
            (None, None) => None,
        };
        let path = path.unwrap_or_else(|| default_path(url));
        // Any Set-Cookie replaces the cookie of the same name, host and path.
        let replaces = |c: &StoredCookie| c.name == name && c.host == host && c.path == path;
        let refused = !self.cookies_enabled
            || (same_site == SameSite::None && !secure)
            || (context == Context::CrossSiteFramed && same_site != SameSite::None);
        if refused {
            jar.seen.push(seen);
            return;
        }
        jar.cookies.retain(|c| !replaces(c));
        if expires.is_none_or(|at| at > now) {
            jar.cookies.push(StoredCookie {
                host,
                name,
                value,
                path,
                expires,
                same_site,
            });
            seen.stored = true;
        }
        jar.seen.push(seen);
    }
}

/// The cookies of `jar` a request to `url` carries in `context`, longest
/// path first (RFC 6265 §5.4).
fn applicable(jar: &Jar, url: &Url, context: Context) -> Vec<(String, String)> {
    let host = url.host_str().unwrap_or_default();
    let now = Utc::now();
    let mut cookies: Vec<&StoredCookie> = jar
        .cookies
        .iter()
        .filter(|c| c.host == host)
        .filter(|c| c.expires.is_none_or(|at| at > now))
        .filter(|c| path_matches(url.path(), &c.path))
        .filter(|c| match context {
            Context::SameSite => true,
            Context::CrossSiteTopLevelGet => c.same_site != SameSite::Strict,
            Context::CrossSiteTopLevelPost | Context::CrossSiteFramed => {
                c.same_site == SameSite::None
            }
        })
        .collect();
    cookies.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
    cookies
        .into_iter()
        .map(|c| (c.name.clone(), c.value.clone()))
        .collect()
}

/// RFC 6265 §5.1.4 path-match.
fn path_matches(request: &str, cookie: &str) -> bool {
    request == cookie
        || (request.starts_with(cookie)
            && (cookie.ends_with('/') || request[cookie.len()..].starts_with('/')))
}

/// RFC 6265 §5.1.4 default-path: the request path up to its last `/`.
fn default_path(url: &Url) -> String {
    let path = url.path();
    match path.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => path[..i].to_owned(),
    }
}

fn origin_of(url: &str) -> Option<String> {
    Url::parse(url)
        .ok()
        .map(|u| u.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn keeps_secure_cookies_on_loopback_and_honours_expiry() {
        let browser = Browser::new();
        let mut jar = Jar::default();
        let page = url("http://127.0.0.1:8000/lti/login");
        browser.store(
            &mut jar,
            &page,
            "state=abc; Path=/; SameSite=None; Secure; HttpOnly",
            Context::SameSite,
        );
        browser.store(&mut jar, &page, "local=1", Context::SameSite);
        assert_eq!(jar.seen.len(), 2);
        assert!(jar.seen[0].is_cross_site_state_cookie());
        assert_eq!(jar.seen[0].attribute("samesite"), Some("None"));
        let launch = url("http://127.0.0.1:8000/lti/launch");
        assert_eq!(
            applicable(&jar, &launch, Context::SameSite),
            vec![
                ("local".to_owned(), "1".to_owned()),
                ("state".to_owned(), "abc".to_owned())
            ]
        );
        // Default path /lti does not match /other; a cross-site post carries
        // only the SameSite=None cookie.
        let other = url("http://127.0.0.1:8000/other");
        assert_eq!(applicable(&jar, &other, Context::SameSite).len(), 1);
        assert_eq!(applicable(&jar, &launch, Context::CrossSiteFramed).len(), 1);
        assert_eq!(
            applicable(&jar, &launch, Context::CrossSiteTopLevelPost).len(),
            1
        );
        assert_eq!(
            applicable(&jar, &launch, Context::CrossSiteTopLevelGet).len(),
            2
        );
        // Cookies are per host, not per port, as in browsers.
        let other_port = url("http://127.0.0.1:9000/lti/x");
        assert_eq!(applicable(&jar, &other_port, Context::SameSite).len(), 2);

        browser.store(
            &mut jar,
            &page,
            "state=; Path=/; Max-Age=0",
            Context::SameSite,
        );
        browser.store(
            &mut jar,
            &page,
            "local=; Path=/lti; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
            Context::SameSite,
        );
        assert!(applicable(&jar, &launch, Context::SameSite).is_empty());
    }

    #[test]
    fn refuses_what_browsers_refuse() {
        let browser = Browser::new();
        let mut jar = Jar::default();
        let page = url("http://127.0.0.1:8000/");
        browser.store(&mut jar, &page, "a=1; SameSite=None", Context::SameSite);
        browser.store(
            &mut jar,
            &page,
            "b=1; SameSite=Lax",
            Context::CrossSiteFramed,
        );
        assert!(jar.cookies.is_empty());
        assert!(jar.seen.iter().all(|c| !c.stored));

        let off = Browser::new().with_cookies(false);
        let mut jar = Jar::default();
        off.store(
            &mut jar,
            &page,
            "c=1; SameSite=None; Secure",
            Context::SameSite,
        );
        assert!(jar.cookies.is_empty());
        assert_eq!(jar.seen.len(), 1);
    }

    #[test]
    fn path_rules() {
        assert!(path_matches("/lti/launch", "/lti"));
        assert!(path_matches("/lti/launch", "/"));
        assert!(path_matches("/lti", "/lti"));
        assert!(!path_matches("/ltix", "/lti"));
        assert_eq!(default_path(&url("http://h/a/b/c")), "/a/b");
        assert_eq!(default_path(&url("http://h/a")), "/");
    }

    #[test]
    fn contexts() {
        let browser = Browser::new();
        let tool = url("http://127.0.0.1:2/launch");
        let lms = url("http://127.0.0.1:1/authorize");
        let get = reqwest::Method::GET;
        let post = reqwest::Method::POST;
        assert_eq!(browser.context(&tool, None, &post), Context::SameSite);
        assert_eq!(
            browser.context(&tool, Some(&tool), &post),
            Context::SameSite
        );
        assert_eq!(
            browser.context(&tool, Some(&lms), &get),
            Context::CrossSiteTopLevelGet
        );
        assert_eq!(
            browser.context(&tool, Some(&lms), &post),
            Context::CrossSiteTopLevelPost
        );
        let framed = Browser::new().framed_by("http://127.0.0.1:1/course/1");
        assert_eq!(framed.context(&tool, None, &get), Context::CrossSiteFramed);
        assert_eq!(framed.context(&lms, None, &get), Context::SameSite);
    }
}
