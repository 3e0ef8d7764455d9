//! Which names labpool answers to, and which origins its own pages have.
//!
//! A request is served only when its `Host` (or HTTP/2 `:authority`) is
//! `lti.base_url`'s host and port, one of `http.allowed_hosts`, or — when
//! base_url is a loopback address — another loopback name with the same
//! port (`localhost` for `127.0.0.1`). Anything else gets 421 Misdirected
//! Request: a DNS-rebinding page (its own name, resolving to labpool) and
//! forged `Host` headers reach nothing. `/healthz` and `/readyz` answer any
//! host, for load balancers that probe by address; they say nothing secret.
//!
//! [`same_origin`] decides whether a form post came from labpool's own
//! pages (the admin login, the try-it launch), from `Sec-Fetch-Site`,
//! `Origin` or `Referer` — compared with base_url's origin and its aliases,
//! never with the request's own `Host`, which the sender chooses.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use url::{Host, Url};

use crate::config::Config;

/// Paths every host may reach: probes by address.
const ANY_HOST: [&str; 2] = ["/healthz", "/readyz"];

/// The host names (and ports) labpool answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts {
    scheme: String,
    /// Lowercase host (IPv6 in brackets) and port.
    names: Vec<(String, u16)>,
    /// base_url's port, when base_url is a loopback address; 0 (a base
    /// URL defaulted from `http.listen` on port 0, whose port is only known
    /// once bound) stands for any port.
    loopback_port: Option<u16>,
    base_origin: String,
}

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => {
            ip.is_loopback()
                || ip
                    .to_ipv4_mapped()
                    .is_some_and(|v4| IpAddr::V4(v4).is_loopback())
        }
    }
}

impl AllowedHosts {
    pub fn from_config(config: &Config) -> AllowedHosts {
        let base = config.base_url();
        let parsed = Url::parse(&base).ok();
        let scheme = parsed
            .as_ref()
            .map_or("http".to_owned(), |u| u.scheme().to_owned());
        let port = parsed
            .as_ref()
            .and_then(Url::port_or_known_default)
            .unwrap_or(80);
        let mut names = Vec::new();
        let mut loopback_port = None;
        if let Some(u) = &parsed
            && let Some(host) = u.host()
        {
            if is_loopback(&host) {
                loopback_port = Some(port);
            }
            names.push((host.to_string().to_ascii_lowercase(), port));
        }
        for alias in &config.http.allowed_hosts {
            if let Some((host, p)) = parse_authority(&scheme, alias) {
                // An alias without a port is at base_url's port.
                let p = if alias_has_port(alias) { p } else { port };
                names.push((host, p));
            }
        }
        AllowedHosts {
            base_origin: parsed
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or(base),
            scheme,
            names,
            loopback_port,
        }
    }

    /// base_url's origin (`https://labs.example.edu`).
    pub fn base_origin(&self) -> &str {
        &self.base_origin
    }

    /// Whether a `Host` value (`host[:port]`) names labpool.
    pub fn allows_authority(&self, authority: &str) -> bool {
        parse_authority(&self.scheme, authority)
            .is_some_and(|(host, port)| self.allows(&host, port))
    }

    /// Whether `origin` (`scheme://host[:port]`, as in `Origin`) is one of
    /// labpool's own. `null` is nobody's.
    pub fn allows_origin(&self, origin: &str) -> bool {
        let Ok(url) = Url::parse(origin) else {
            return false;
        };
        url.scheme() == self.scheme
            && url.username().is_empty()
            && matches!(url.path(), "" | "/")
            && url.host().is_some()
            && self.allows_url_host(&url)
    }

    fn allows_url_host(&self, url: &Url) -> bool {
        match (url.host(), url.port_or_known_default()) {
            (Some(host), Some(port)) => {
                (self.loopback_port_is(port) && is_loopback(&host))
                    || self.allows(&host.to_string().to_ascii_lowercase(), port)
            }
            _ => false,
        }
    }

    fn loopback_port_is(&self, port: u16) -> bool {
        self.loopback_port.is_some_and(|p| p == port || p == 0)
    }

    fn allows(&self, host: &str, port: u16) -> bool {
        if self.names.iter().any(|(h, p)| h == host && *p == port) {
            return true;
        }
        self.loopback_port_is(port)
            && Url::parse(&format!("http://{host}/"))
                .ok()
                .and_then(|u| u.host().map(|h| is_loopback(&h)))
                .unwrap_or(false)
    }
}

fn alias_has_port(alias: &str) -> bool {
    // `[::1]:8080` or `host:8080`; a bare IPv6 address is bracketed.
    match alias.rsplit_once(':') {
        Some((before, port)) => {
            port.chars().all(|c| c.is_ascii_digit())
                && (!before.contains(':') || before.ends_with(']'))
        }
        None => false,
    }
}

/// Host (lowercase, IPv6 bracketed, IPv4 normalised) and port of a
/// `host[:port]` value, the port defaulting to `scheme`'s.
fn parse_authority(scheme: &str, authority: &str) -> Option<(String, u16)> {
    if authority.is_empty() || authority.contains(['/', '@', '?', '#', '\\', ' ']) {
        return None;
    }
    let url = Url::parse(&format!("{scheme}://{authority}/")).ok()?;
    let host = url.host()?.to_string().to_ascii_lowercase();
    Some((host, url.port_or_known_default()?))
}

/// The router layer: 421 for a request to a name labpool does not have.
pub async fn check_host(
    State(hosts): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    if ANY_HOST.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    // HTTP/2 carries the host in the URI (`:authority`), HTTP/1.1 in `Host`.
    let named = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
    match named {
        Some(host) if hosts.allows_authority(&host) => next.run(request).await,
        named => {
            let shown: String = named
                .as_deref()
                .unwrap_or("(none)")
                .chars()
                .take(100)
                .collect();
            tracing::warn!(host = %shown.escape_debug(), path = %request.uri().path(),
                "request refused: not a host labpool answers to (lti.base_url, http.allowed_hosts)");
            (
                StatusCode::MISDIRECTED_REQUEST,
                [(header::CACHE_CONTROL, "no-store")],
                "labpool does not answer to this host name\n",
            )
                .into_response()
        }
    }
}

/// Whether a form post with these headers came from one of labpool's own
/// pages; `Err` says why not, for the log. A request with none of the
/// headers is no browser's (a browser always sends `Origin` with a POST),
/// so it cannot be a cross-site forgery.
pub fn same_origin(hosts: &AllowedHosts, headers: &HeaderMap) -> Result<(), &'static str> {
    let get = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if let Some(site) = get("sec-fetch-site") {
        // The browser's own verdict, when it gives one, is decisive; a
        // same-site page (another subdomain) is not labpool.
        if site != "same-origin" {
            return Err("Sec-Fetch-Site is not same-origin");
        }
    }
    if let Some(origin) = get(header::ORIGIN.as_str()) {
        return if hosts.allows_origin(origin) {
            Ok(())
        } else {
            Err("Origin is not labpool's (lti.base_url, http.allowed_hosts)")
        };
    }
    if let Some(referer) = get(header::REFERER.as_str()) {
        let origin = Url::parse(referer).map(|u| u.origin().ascii_serialization());
        return match origin {
            Ok(o) if hosts.allows_origin(&o) => Ok(()),
            _ => Err("Referer is not one of labpool's pages"),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(base: &str, aliases: &[&str]) -> AllowedHosts {
        let mut config = Config::default();
        config.lti.base_url = Some(base.into());
        config.http.allowed_hosts = aliases.iter().map(|a| a.to_string()).collect();
        AllowedHosts::from_config(&config)
    }

    #[test]
    fn only_base_urls_host_and_aliases_are_answered() {
        let h = hosts(
            "https://labs.example.edu",
            &["labs-old.example.edu", "10.0.0.5:8443"],
        );
        for ok in [
            "labs.example.edu",
            "LABS.example.edu",
            "labs.example.edu:443",
            "labs-old.example.edu",
            "10.0.0.5:8443",
        ] {
            assert!(h.allows_authority(ok), "{ok} refused");
        }
        for bad in [
            "evil.example",
            "labs.example.edu:8443",
            "labs.example.edu.evil.example",
            "10.0.0.5",
            "localhost",
            "labs.example.edu@evil.example",
            "",
        ] {
            assert!(!h.allows_authority(bad), "{bad} allowed");
        }
        assert!(h.allows_origin("https://labs.example.edu"));
        assert!(h.allows_origin("https://labs-old.example.edu"));
        for bad in [
            "http://labs.example.edu",
            "https://evil.example",
            "null",
            "https://labs.example.edu:444",
        ] {
            assert!(!h.allows_origin(bad), "{bad} allowed");
        }
    }

    #[test]
    fn a_loopback_base_url_answers_to_every_loopback_name_on_its_port() {
        let h = hosts("http://127.0.0.1:8080", &[]);
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "127.0.0.2:8080",
        ] {
            assert!(h.allows_authority(ok), "{ok} refused");
        }
        for bad in ["127.0.0.1:8081", "evil.example:8080", "192.168.1.5:8080"] {
            assert!(!h.allows_authority(bad), "{bad} allowed");
        }
        assert!(h.allows_origin("http://localhost:8080"));
        assert!(!h.allows_origin("http://evil.example:8080"));
        // base_url defaulted from `http.listen: 127.0.0.1:0`: any port.
        let any = hosts("http://127.0.0.1:0", &[]);
        assert!(any.allows_authority("127.0.0.1:41234"));
        assert!(!any.allows_authority("evil.example:41234"));
    }

    #[test]
    fn same_origin_takes_the_browsers_word_then_origin_then_referer() {
        let h = hosts("https://labs.example.edu", &[]);
        let with = |pairs: &[(&'static str, &str)]| {
            let mut map = HeaderMap::new();
            for (k, v) in pairs {
                map.insert(*k, v.parse().unwrap());
            }
            same_origin(&h, &map)
        };
        assert!(with(&[]).is_ok());
        assert!(
            with(&[
                ("sec-fetch-site", "same-origin"),
                ("origin", "https://labs.example.edu")
            ])
            .is_ok()
        );
        assert!(with(&[("sec-fetch-site", "cross-site")]).is_err());
        assert!(with(&[("sec-fetch-site", "same-site")]).is_err());
        assert!(with(&[("origin", "https://evil.example")]).is_err());
        assert!(with(&[("origin", "null")]).is_err());
        // Host is not consulted: forging it with Origin gains nothing.
        assert!(with(&[("origin", "http://evil.example"), ("host", "evil.example")]).is_err());
        assert!(with(&[("referer", "https://labs.example.edu/admin/login")]).is_ok());
        assert!(with(&[("referer", "https://evil.example/x")]).is_err());
    }
}
