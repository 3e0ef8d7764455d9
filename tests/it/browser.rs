//! A headless Chromium for the page tests: chromedriver on a free loopback
//! port, driven over WebDriver by fantoccini. Each `Chrome` has its own
//! chromedriver and profile directory, so tests running as threads of this
//! one process share neither cookies nor ports. `scripts/setup` installs the
//! browser; without it these tests fail rather than skip.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const POLL: Duration = Duration::from_millis(50);

pub struct Chrome {
    // Fields drop in this order: the session handle, then chromedriver and
    // Chromium, then the profile directory they were writing to.
    client: Client,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

/// chromedriver, in its own process group: dropping it kills the group, which
/// takes Chromium down too when a test panics before `close`.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the group we created (pgid = the child's pid).
        unsafe { libc::kill(-(self.0.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// `var`'s value, or `default`; the file must exist.
fn binary(var: &str, default: &str) -> String {
    let path = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    assert!(
        std::path::Path::new(&path).is_file(),
        "{path} is missing: run scripts/setup (it installs chromium and chromium-driver), or set {var}"
    );
    path
}

/// Starts chromedriver on a free loopback port and waits for its /status to
/// say ready. Returns it and its URL.
async fn chromedriver(path: &str) -> (Driver, String) {
    // The port is free when we look, but another test may take it before
    // chromedriver binds it: then chromedriver exits, and we try another.
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut driver = Driver(
            Command::new(path)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {path}: {e}")),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Ok(None) = driver.0.try_wait() {
            if let Ok(r) = reqwest::get(format!("{url}/status")).await
                && let Ok(status) = r.json::<Value>().await
                && status["value"]["ready"] == true
            {
                return (driver, url);
            }
            assert!(
                Instant::now() < deadline,
                "{path} on port {port}: not ready after 20 s"
            );
            tokio::time::sleep(POLL).await;
        }
    }
    panic!("{path} exited before answering, 5 times");
}

impl Chrome {
    /// Starts chromedriver on a free loopback port, then a headless Chromium
    /// session with a fresh profile.
    pub async fn start() -> Chrome {
        let chromium = binary("LABPOOL_CHROMIUM", "/usr/bin/chromium");
        let (driver, url) =
            chromedriver(&binary("LABPOOL_CHROMEDRIVER", "/usr/bin/chromedriver")).await;
        let profile = tempfile::tempdir().expect("a profile directory");
        let Value::Object(caps) = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox", // the tests run as root
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1200,800",
                    format!("--user-data-dir={}", profile.path().display()),
                    "--no-first-run",
                ],
            },
        }) else {
            unreachable!()
        };
        let client = ClientBuilder::native()
            .capabilities(caps)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("a Chromium session from chromedriver at {url}: {e}"));
        Chrome {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// The page's URL, for failure messages.
    async fn url(&self) -> String {
        match self.client.current_url().await {
            Ok(url) => url.to_string(),
            Err(e) => format!("<no URL: {e}>"),
        }
    }

    /// Polls until the element matching `css` has text containing `needle`,
    /// and returns that text; panics after `timeout` with the last text.
    pub async fn wait_text(&self, css: &str, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            // The element may not exist yet, or be replaced while we read it.
            let last = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.text().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Ok(text) = &last
                && text.contains(needle)
            {
                return text.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "{css} has no text containing {needle:?} after {timeout:?}: last {last:?}, on {}",
                    self.url().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until the script `expr` (run with `execute`, so it `return`s its
    /// value) returns `want`; panics after `timeout` with the last value.
    pub async fn wait_js(&self, expr: &str, want: Value, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.client.execute(expr, vec![]).await;
            if let Ok(value) = &last
                && *value == want
            {
                return want;
            }
            if Instant::now() > deadline {
                panic!(
                    "{expr:?} is not {want} after {timeout:?}: last {last:?}, on {}",
                    self.url().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Types `keys` into the focused element, or into the element matching
    /// `css` (focused first) if `css` isn't empty. `\n` presses Enter.
    ///
    /// Key actions rather than WebDriver's "send keys to element": they go to
    /// whatever has focus, as a user's keys do (xterm.js reads keydowns on its
    /// zero-size, off-screen `.xterm-helper-textarea`), one path for both
    /// cases, and no "element not interactable" check, which the WebDriver
    /// spec allows drivers to apply to such elements (chromedriver 156 doesn't).
    pub async fn type_keys(&self, css: &str, keys: &str) {
        if !css.is_empty() {
            let element = self
                .client
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("type_keys: no {css}: {e}"));
            self.client
                .execute("arguments[0].focus()", vec![json!(element)])
                .await
                .unwrap_or_else(|e| panic!("type_keys: focusing {css}: {e}"));
        }
        let mut actions = KeyActions::new("keyboard".into());
        for c in keys.chars() {
            let value = match c {
                '\n' | '\r' => '\u{e007}', // WebDriver's Enter
                c => c,
            };
            actions = actions
                .then(KeyAction::Down { value })
                .then(KeyAction::Up { value });
        }
        self.client
            .perform_actions(actions)
            .await
            .unwrap_or_else(|e| panic!("type_keys {keys:?}: {e}"));
    }

    /// Ends the session (Chromium quits), then chromedriver.
    pub async fn close(self) {
        let Chrome {
            client,
            _driver,
            _profile,
        } = self;
        if let Err(e) = client.close().await {
            panic!("closing the Chromium session: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::http::{HeaderMap, header};
    use axum::response::{AppendHeaders, Html};
    use axum::routing::{get, post};

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    /// Serves `app` on a fresh loopback port; returns its base URL.
    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        base
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_the_page_script() {
        let base = serve(Router::new().route(
            "/",
            get(Html(
                "<div id=out>loading</div>\
                 <script>addEventListener('load', () => \
                   setTimeout(() => out.textContent = 'written by ' + navigator.userAgent, 100))</script>",
            )),
        ))
        .await;
        let chrome = Chrome::start().await;
        chrome.goto(&base).await;
        let text = chrome.wait_text("#out", "written by", WAIT).await;
        assert!(text.contains("HeadlessChrome"), "{text}");
        chrome.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn types_into_the_focused_element_and_xterms_hidden_textarea() {
        // The second textarea is styled like xterm.js's input.
        let base = serve(Router::new().route(
            "/",
            get(Html(
                "<textarea id=t autofocus></textarea>\
                 <textarea class=xterm-helper-textarea style='position: absolute; opacity: 0; \
                   left: -9999em; top: 0; width: 0; height: 0; z-index: -5; overflow: hidden; \
                   resize: none'></textarea>",
            )),
        ))
        .await;
        let chrome = Chrome::start().await;
        chrome.goto(&base).await;
        chrome.type_keys("", "echo hi\n").await;
        chrome
            .wait_js("return t.value", json!("echo hi\n"), WAIT)
            .await;
        chrome.type_keys(".xterm-helper-textarea", "ls -l\n").await;
        let xterm = "return document.querySelector('.xterm-helper-textarea').value";
        chrome.wait_js(xterm, json!("ls -l\n"), WAIT).await;
        chrome
            .wait_js("return t.value", json!("echo hi\n"), WAIT)
            .await;
        chrome.close().await;
    }

    /// What the LTI launch relies on: a `SameSite=None; Secure` cookie set by
    /// http://127.0.0.1 (loopback is potentially trustworthy, so Secure
    /// cookies are allowed without TLS) comes along on a form POST from
    /// another port of 127.0.0.1. A `SameSite=Lax` cookie, which a cross-site
    /// POST would not carry, shows the two ports are same-site.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn secure_cookies_of_127_0_0_1_cross_ports_on_a_form_post() {
        let tool = serve(Router::new().route(
            "/launch",
            post(|headers: HeaderMap| async move {
                let cookie = headers.get(header::COOKIE).and_then(|c| c.to_str().ok());
                Html(format!(
                    "<div id=cookie>cookie: {}</div>",
                    cookie.unwrap_or("(none)")
                ))
            }),
        ))
        .await;
        let platform = serve(Router::new().route(
            "/",
            get(move || async move {
                // AppendHeaders: an array of headers would keep only the last.
                let cookies = AppendHeaders([
                    (header::SET_COOKIE, "c=1; Path=/; SameSite=None; Secure; HttpOnly"),
                    (header::SET_COOKIE, "lax=1; Path=/; SameSite=Lax; HttpOnly"),
                ]);
                let form = format!(
                    "<form method=post action='{tool}/launch'><input type=hidden name=id_token value=x></form>\
                     <script>addEventListener('load', () => document.forms[0].submit())</script>"
                );
                (cookies, Html(form))
            }),
        ))
        .await;
        let chrome = Chrome::start().await;
        chrome.goto(&platform).await;
        let text = chrome.wait_text("#cookie", "cookie:", WAIT).await;
        let mut cookies: Vec<_> = text.trim_start_matches("cookie: ").split("; ").collect();
        cookies.sort();
        assert_eq!(cookies, ["c=1", "lax=1"], "{text}");
        // Stored as Secure, not downgraded.
        let jar = chrome.client().get_all_cookies().await.unwrap();
        assert!(
            jar.iter()
                .any(|c| c.name() == "c" && c.secure() == Some(true)),
            "{jar:?}"
        );
        chrome.close().await;
    }
}
