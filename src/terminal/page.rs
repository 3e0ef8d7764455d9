//! The session page: HTML shell, vendored xterm.js and the page script.
//!
//! Everything is embedded in the binary: xterm.js and its fit addon (vendored
//! by `scripts/vendor-xterm` into `assets/xterm/`), and the hand-written
//! `assets/session.js` / `assets/session.css`. The page carries no inline
//! script (the server sets `script-src 'self'`). The page is the same shell
//! for every request: it names only the session id from its own URL, and
//! learns everything else (title, time left) over the socket once its
//! credential is accepted, so an unauthenticated request learns nothing.

use std::sync::LazyLock;

use sha2::{Digest, Sha256};

use crate::html::escape;

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every asset the page may load: name under `/assets/`, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "xterm.js",
        JS,
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/assets/xterm/xterm.js"
        )),
    ),
    (
        "xterm.css",
        CSS,
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/assets/xterm/xterm.css"
        )),
    ),
    (
        "addon-fit.js",
        JS,
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/assets/xterm/addon-fit.js"
        )),
    ),
    (
        "session.js",
        JS,
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/session.js")),
    ),
    (
        "session.css",
        CSS,
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/session.css")),
    ),
];

/// A short hash of all assets, appended as `?v=` so a new build busts caches.
static ASSET_VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut hash = Sha256::new();
    for (name, _, bytes) in ASSETS {
        hash.update(name.as_bytes());
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    }
    hex::encode(&hash.finalize()[..6])
});

/// The full HTML document of a session's page.
pub fn render(session_id: &str) -> String {
    let v = ASSET_VERSION.as_str();
    let head = format!(
        r#"
<meta name="referrer" content="no-referrer">
<link rel="stylesheet" href="/assets/xterm.css?v={v}">
<link rel="stylesheet" href="/assets/session.css?v={v}">"#
    );
    let attributes = format!(
        r#" data-session="{}" data-ws="{}" data-state="connecting""#,
        escape(session_id),
        escape(&format!("/session/{session_id}/terminal"))
    );
    let body = format!(
        r#"<header>
<span id="title">{TITLE}</span>
<span id="left" aria-live="off"></span>
<span id="state" class="state state-connecting" role="status"><span class="dot" aria-hidden="true"></span><span class="label">connecting…</span></span>
</header>
<main id="terminal"></main>
<div id="notice" role="alertdialog" aria-labelledby="notice-text" hidden>
<div class="box">
<p id="notice-text"></p>
<button id="notice-button" type="button" hidden>Use it here</button>
</div>
</div>
<noscript><p>The lab terminal needs JavaScript.</p></noscript>
<script src="/assets/xterm.js?v={v}"></script>
<script src="/assets/addon-fit.js?v={v}"></script>
<script src="/assets/session.js?v={v}"></script>"#
    );
    crate::html::page(&crate::html::Page {
        title: &format!("{TITLE} — labpool"),
        head: &head,
        style: None,
        body_attributes: &attributes,
        body: &body,
    })
}

/// What the page calls the lab until the socket says more.
const TITLE: &str = "Your lab";

/// An embedded asset by its name under `/assets/`: content type and bytes.
pub fn asset(name: &str) -> Option<(&'static str, &'static [u8])> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|&(_, content_type, bytes)| (content_type, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_escapes_hostile_values() {
        let hostile = r#""><script>alert(1)</script>'"#;
        let page = render(hostile);
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains(hostile), "{page}");
        assert!(!page.contains("</script>'"), "{page}");
        let escaped = "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&#39;";
        assert!(page.contains(&format!(r#"data-session="{escaped}""#)));
        assert!(page.contains(&format!(r#"data-ws="/session/{escaped}/terminal""#)));
        // The only scripts are the three external ones.
        assert_eq!(page.matches("<script").count(), 3);
        assert_eq!(page.matches(r#"<script src="/assets/"#).count(), 3);
    }

    #[test]
    fn render_names_the_session_and_nothing_else() {
        let page = render("s-123");
        assert!(page.starts_with("<!doctype html>"));
        assert!(page.contains("<title>Your lab — labpool</title>"));
        assert!(page.contains(r#"<meta name="referrer" content="no-referrer">"#));
        assert!(page.contains(r#"<meta name="viewport""#));
        for attr in [
            r#"data-session="s-123""#,
            r#"data-ws="/session/s-123/terminal""#,
        ] {
            assert!(page.contains(attr), "missing {attr}");
        }
        // No credential, no course, no times: those come over the socket
        // once the page's credential is accepted.
        for absent in ["data-token", "data-title", "data-expires-at", "token="] {
            assert!(!page.contains(absent), "{absent} in {page}");
        }
        for id in [
            "title",
            "left",
            "state",
            "terminal",
            "notice",
            "notice-text",
            "notice-button",
        ] {
            assert!(page.contains(&format!(r#"id="{id}""#)), "missing #{id}");
        }
    }

    #[test]
    fn every_asset_resolves() {
        for (name, want) in [
            ("xterm.js", JS),
            ("xterm.css", CSS),
            ("addon-fit.js", JS),
            ("session.js", JS),
            ("session.css", CSS),
        ] {
            let (content_type, bytes) = asset(name).unwrap_or_else(|| panic!("no asset {name}"));
            assert_eq!(content_type, want, "{name}");
            assert!(!bytes.is_empty(), "{name} is empty");
        }
    }

    #[test]
    fn unknown_asset_is_none() {
        for name in [
            "",
            "xterm",
            "VERSIONS",
            "LICENSE.xterm",
            "../Cargo.toml",
            "xterm/xterm.js",
            "session.js.map",
        ] {
            assert!(asset(name).is_none(), "{name}");
        }
    }

    #[test]
    fn page_references_every_asset() {
        let page = render("s");
        let v = ASSET_VERSION.as_str();
        assert_eq!(v.len(), 12);
        for (name, _, _) in ASSETS {
            assert!(
                page.contains(&format!(r#"="/assets/{name}?v={v}""#)),
                "{name} not linked"
            );
        }
    }

    #[test]
    fn vendored_assets_ship_no_source_maps() {
        for name in ["xterm.js", "xterm.css", "addon-fit.js"] {
            let (_, bytes) = asset(name).unwrap();
            let text = std::str::from_utf8(bytes).unwrap();
            assert!(!text.contains("sourceMappingURL"), "{name}");
        }
    }
}
