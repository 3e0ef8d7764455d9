//! Security headers on every response: `X-Content-Type-Options: nosniff`,
//! HSTS when `lti.base_url` is https, and a Content-Security-Policy on any
//! HTML page that does not set its own (the LTI pages: refusals, waiting,
//! storage checks, the course picker, auto-posts, registration).
//!
//! Those pages' inline scripts and styles are allowed by hash
//! ([`csp_for_html`]): every `<script>` and `<style>` in them comes from a
//! template (values are escaped, so none can open one), inline event
//! handlers, plugins, external scripts and `<base>` are refused, forms may
//! post only to labpool and to where the page's own forms point (a Deep
//! Linking return), and fetches go only to labpool. No `frame-ancestors`
//! there: the LMS frames those pages. Pages with a policy of their own
//! (dashboard, try-it, session page) keep it.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// HTML pages larger than this are passed on without a computed policy
/// (labpool's LTI pages are a few KiB).
const MAX_PAGE: usize = 1 << 20;
/// One year, the usual HSTS lifetime.
pub const HSTS: &str = "max-age=31536000";

/// What the layer adds, decided once from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct SecurityHeaders {
    pub hsts: bool,
}

/// Adds `nosniff`, HSTS (with https) and, to HTML without a policy of its
/// own, the hash-based policy of [`csp_for_html`].
pub async fn add(State(config): State<SecurityHeaders>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let (mut parts, body) = response.into_parts();
    let h = &mut parts.headers;
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if config.hsts {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    let html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if !html || h.contains_key(header::CONTENT_SECURITY_POLICY) {
        return Response::from_parts(parts, body);
    }
    let bytes = match axum::body::to_bytes(body, MAX_PAGE).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(error = %e, "cannot read an HTML page to set its CSP");
            parts.headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'"),
            );
            return Response::from_parts(parts, Body::empty());
        }
    };
    let csp = csp_for_html(&String::from_utf8_lossy(&bytes));
    if let Ok(v) = HeaderValue::from_str(&csp) {
        parts.headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The contents of every `<tag ...>…</tag>` block in `html`.
fn blocks<'a>(html: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(&open) {
        let after = &rest[at + open.len()..];
        // `<scripts` or `<styles` are other tags.
        if !after.starts_with(['>', ' ']) {
            rest = after;
            continue;
        }
        let Some(gt) = after.find('>') else { break };
        let body = &after[gt + 1..];
        let Some(end) = body.find(&close) else { break };
        out.push(&body[..end]);
        rest = &body[end + close.len()..];
    }
    out
}

fn hash(text: &str) -> String {
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
    )
}

/// Origins the page's forms post to (absolute `action`s), besides 'self'.
fn form_origins(html: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find("<form ") {
        let tag_end = rest[at..].find('>').map_or(rest.len(), |e| at + e);
        let tag = &rest[at..tag_end];
        if let Some(start) = tag.find("action=\"") {
            let value = &tag[start + 8..];
            let value = &value[..value.find('"').unwrap_or(value.len())];
            let value = value.replace("&amp;", "&");
            if let Ok(url) = url::Url::parse(&value)
                && matches!(url.scheme(), "http" | "https")
            {
                let origin = url.origin().ascii_serialization();
                if !out.contains(&origin) {
                    out.push(origin);
                }
            }
        }
        rest = &rest[tag_end..];
    }
    out
}

/// The policy of one of labpool's own HTML pages: its inline scripts and
/// styles by hash, nothing else.
pub fn csp_for_html(html: &str) -> String {
    let scripts: Vec<String> = blocks(html, "script").into_iter().map(hash).collect();
    let styles: Vec<String> = blocks(html, "style").into_iter().map(hash).collect();
    let mut csp = String::from("default-src 'none'");
    if !scripts.is_empty() {
        csp.push_str(&format!("; script-src {}", scripts.join(" ")));
    }
    if !styles.is_empty() {
        csp.push_str(&format!("; style-src {}", styles.join(" ")));
    }
    csp.push_str("; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'");
    for origin in form_origins(html) {
        csp.push(' ');
        csp.push_str(&origin);
    }
    csp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_layer_adds_nosniff_hsts_and_a_policy_only_where_missing() {
        use axum::response::Html;
        let app = axum::Router::new()
            .route(
                "/page",
                axum::routing::get(|| async { Html(crate::lti::pages::page("t", "<p>x</p>")) }),
            )
            .route(
                "/own",
                axum::routing::get(|| async {
                    (
                        [(header::CONTENT_SECURITY_POLICY, "default-src 'self'")],
                        Html("<p>x</p>"),
                    )
                }),
            )
            .route("/json", axum::routing::get(|| async { "{}" }))
            .layer(axum::middleware::from_fn_with_state(
                SecurityHeaders { hsts: true },
                add,
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        for path in ["/page", "/own", "/json"] {
            let r = reqwest::get(format!("{base}{path}")).await.unwrap();
            let h = r.headers();
            assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
            assert_eq!(h["strict-transport-security"], HSTS, "{path}");
            let csp = h
                .get("content-security-policy")
                .map(|v| v.to_str().unwrap().to_owned());
            match path {
                "/page" => assert!(csp.unwrap().contains("style-src 'sha256-")),
                "/own" => assert_eq!(csp.as_deref(), Some("default-src 'self'")),
                _ => assert_eq!(csp, None),
            }
            if path == "/page" {
                assert!(r.text().await.unwrap().contains("<p>x</p>"));
            }
        }
    }

    #[test]
    fn the_policy_allows_exactly_the_pages_own_scripts_and_forms() {
        let page = crate::lti::pages::auto_post(
            "https://lms.example/deep-link/return?x=1&y=2",
            &[("JWT", "a<b")],
        );
        let csp = csp_for_html(&page);
        let script = r#"document.getElementById("autopost").submit();"#;
        assert!(csp.contains(&hash(script)), "{csp}");
        assert!(
            csp.contains("form-action 'self' https://lms.example"),
            "{csp}"
        );
        assert!(csp.starts_with("default-src 'none'"));
        assert!(!csp.contains("unsafe-inline"));
        // <noscript> is not a script.
        assert_eq!(blocks(&page, "script").len(), 1);
        let plain = csp_for_html("<p>hi</p>");
        assert!(!plain.contains("script-src"), "{plain}");
    }
}
