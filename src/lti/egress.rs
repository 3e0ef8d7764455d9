//! Outgoing requests that a stranger chooses the address of: the platform
//! configuration and registration endpoint of a Dynamic Registration, and
//! the JWKS of a platform registered that way. An LMS admin pastes a URL,
//! but whoever holds a registration link could paste any URL, so these
//! requests must never reach labpool's own machine, its network or a cloud
//! metadata service (server-side request forgery).
//!
//! [`Egress`] checks every address after DNS resolution and connects only to
//! the addresses it checked (its resolver hands reqwest nothing else, so a
//! name that resolves differently the second time, DNS rebinding, gains
//! nothing); IP literals (which reqwest never resolves) are checked before
//! the request. The URL parser has already normalised odd spellings
//! (`0x7f000001`, `2130706433`, `127.1` are `127.0.0.1`), and IPv4 inside
//! IPv6 (`::ffff:127.0.0.1`, NAT64, 6to4) is checked as the IPv4 it carries.
//! Redirects are never followed and no proxy from the environment is used
//! (a proxy would resolve names itself).
//!
//! Failures are one [`EgressError`] whose text never holds anything the
//! remote side sent: callers log the detail and show a generic message.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::config::{Cidr, RegistrationConfig};

/// Bodies read from a platform are cut off here (a configuration or a JWKS
/// is a few KiB).
pub const MAX_BODY: usize = 256 * 1024;
/// At most this much of a refused answer's body goes to the log.
const LOGGED_BODY: usize = 200;

/// Which destination addresses outgoing requests may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Private, loopback, link-local and the other internal ranges are
    /// allowed (never the metadata addresses, unless listed).
    pub allow_private: bool,
    /// Networks allowed whatever their kind (`127.0.0.0/8` for an LMS on
    /// the same machine, `169.254.169.254/32` if you really mean it).
    pub allowed: Vec<Cidr>,
}

/// Why an address is refused; `None`: it is public.
fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return v4_kind(v4).or(Some("IPv4-mapped"));
            }
            let seg = v6.segments();
            if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Some("cloud metadata")
            } else if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if seg[0] & 0xfe00 == 0xfc00 {
                Some("unique local (ULA)")
            } else if seg[0] & 0xffc0 == 0xfe80 || seg[0] & 0xffc0 == 0xfec0 {
                Some("link-local")
            } else if seg[0] == 0x2001 && seg[1] == 0xdb8 {
                Some("documentation")
            } else {
                None
            }
        }
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(
        if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
            "cloud metadata"
        } else if ip.is_loopback() {
            "loopback"
        } else if ip.is_private() {
            "private (RFC 1918)"
        } else if ip.is_link_local() {
            "link-local"
        } else if a == 100 && (64..128).contains(&b) {
            "shared (CGNAT)"
        } else if a == 0 {
            "unspecified"
        } else if ip.is_multicast() || a >= 240 {
            "multicast or reserved"
        } else if ip.is_broadcast() {
            "broadcast"
        } else if (a == 192 && b == 0 && c == 0) || (a == 198 && (b & 0xfe) == 18) {
            "special-purpose"
        } else if ip.is_documentation() {
            "documentation"
        } else {
            return None;
        },
    )
}

/// The IPv4 address an IPv6 one carries: mapped (`::ffff:a.b.c.d`),
/// compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let seg = ip.segments();
    let low = Ipv4Addr::new(
        (seg[6] >> 8) as u8,
        seg[6] as u8,
        (seg[7] >> 8) as u8,
        seg[7] as u8,
    );
    if seg[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(low);
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low);
    }
    if seg[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        ));
    }
    None
}

impl AddressPolicy {
    pub fn from_config(config: &RegistrationConfig) -> AddressPolicy {
        AddressPolicy {
            allow_private: config.allow_private_networks,
            allowed: config.allowed_networks.clone(),
        }
    }

    /// `Err(kind)` when `ip` may not be reached.
    pub fn check(&self, ip: IpAddr) -> Result<(), &'static str> {
        let canonical = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self
            .allowed
            .iter()
            .any(|net| net.contains(ip) || net.contains(canonical))
        {
            return Ok(());
        }
        match internal_kind(ip) {
            None => Ok(()),
            Some("cloud metadata") => Err("cloud metadata"),
            Some(_) if self.allow_private => Ok(()),
            Some(kind) => Err(kind),
        }
    }
}

/// Why an outgoing request failed. Its text is for logs only: it names the
/// URL and what went wrong, never what the remote side answered beyond its
/// status and a short, truncated excerpt in `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url}: {detail}")]
pub struct EgressError {
    pub url: String,
    pub detail: String,
}

/// The guarded HTTP client.
#[derive(Clone)]
pub struct Egress {
    http: reqwest::Client,
    policy: Arc<AddressPolicy>,
}

impl Egress {
    pub fn new(policy: AddressPolicy) -> Egress {
        let policy = Arc::new(policy);
        let http = reqwest::Client::builder()
            .user_agent(concat!("labpool/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(Checked(policy.clone())))
            .build()
            .expect("HTTP client builds");
        Egress { http, policy }
    }

    /// Whether `url` may be requested as far as can be told without DNS:
    /// http(s), and an IP literal host allowed by the policy.
    pub fn check_url(&self, url: &str) -> Result<url::Url, EgressError> {
        let fail = |detail: String| EgressError {
            url: url.to_owned(),
            detail,
        };
        let parsed = url::Url::parse(url).map_err(|e| fail(format!("not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(fail(format!("scheme {} is not http(s)", parsed.scheme())));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(fail("the URL carries credentials".into()));
        }
        let ip = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(fail("the URL has no host".into())),
        };
        if let Some(ip) = ip {
            self.policy
                .check(ip)
                .map_err(|kind| fail(format!("{ip} is a {kind} address")))?;
        }
        Ok(parsed)
    }

    /// GETs JSON from `url` (with `bearer` if given).
    pub async fn get_json(
        &self,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<serde_json::Value, EgressError> {
        let parsed = self.check_url(url)?;
        let mut request = self.http.get(parsed);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        self.json(url, request).await
    }

    /// POSTs `body` as JSON to `url` (with `bearer` if given); the JSON answer.
    pub async fn post_json(
        &self,
        url: &str,
        bearer: Option<&str>,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, EgressError> {
        let parsed = self.check_url(url)?;
        let mut request = self.http.post(parsed).json(body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        self.json(url, request).await
    }

    /// GETs `url`: the response, for callers that read headers too. The
    /// status is checked (2xx); the body is the caller's to read.
    pub async fn get(&self, url: &str) -> Result<reqwest::Response, EgressError> {
        let parsed = self.check_url(url)?;
        let response = self.send(url, self.http.get(parsed)).await?;
        if !response.status().is_success() {
            return Err(EgressError {
                url: url.to_owned(),
                detail: format!("HTTP {}", response.status()),
            });
        }
        Ok(response)
    }

    async fn send(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, EgressError> {
        request.send().await.map_err(|e| EgressError {
            url: url.to_owned(),
            detail: error_chain(&e),
        })
    }

    async fn json(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<serde_json::Value, EgressError> {
        let fail = |detail: String| EgressError {
            url: url.to_owned(),
            detail,
        };
        let response = self.send(url, request).await?;
        let status = response.status();
        let body = read_capped(response)
            .await
            .map_err(|e| fail(format!("reading the answer: {e}")))?;
        if !status.is_success() {
            // For the log only (callers never show it): a short excerpt, as
            // the platform's own error text helps its admin.
            let text = String::from_utf8_lossy(&body);
            let excerpt: String = text.chars().take(LOGGED_BODY).collect();
            return Err(fail(format!("HTTP {status}: {excerpt:?}")));
        }
        serde_json::from_slice(&body).map_err(|e| fail(format!("not JSON: {e}")))
    }
}

/// The body of `response`, refused beyond [`MAX_BODY`].
pub async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("more than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error with its causes (reqwest's own text is "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// The resolver that hands reqwest only addresses the policy allows.
struct Checked(Arc<AddressPolicy>);

impl Resolve for Checked {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = Vec::new();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check(a.ip()) {
                    Ok(()) => true,
                    Err(kind) => {
                        refused.push(format!("{} ({kind})", a.ip()));
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = if refused.is_empty() {
                    format!("{host} has no address")
                } else {
                    format!(
                        "{host} resolves only to refused addresses: {}",
                        refused.join(", ")
                    )
                };
                return Err(why.into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> Egress {
        Egress::new(AddressPolicy::default())
    }

    #[test]
    fn odd_spellings_of_internal_addresses_are_refused() {
        let egress = strict();
        for url in [
            "http://127.0.0.1/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://127.1/",
            "http://0177.0.0.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[64:ff9b::a00:1]/",
            "http://[2002:a00:1::]/",
            "http://0.0.0.0/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://[fd12::1]/",
            "http://[fe80::1]/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
        ] {
            let refused = egress.check_url(url);
            assert!(refused.is_err(), "{url} was allowed");
        }
        for url in [
            "https://93.184.215.14/",
            "https://[2606:4700::1111]/",
            "https://lms.example.edu/x",
        ] {
            assert!(egress.check_url(url).is_ok(), "{url} was refused");
        }
        for url in [
            "file:///etc/passwd",
            "gopher://x/",
            "http://user:pw@example.com/",
        ] {
            assert!(egress.check_url(url).is_err(), "{url} was allowed");
        }
    }

    #[test]
    fn allowances_open_only_what_they_name() {
        let private = AddressPolicy {
            allow_private: true,
            allowed: vec![],
        };
        assert!(private.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(private.check("10.0.0.1".parse().unwrap()).is_ok());
        // The metadata service needs to be named.
        assert!(private.check("169.254.169.254".parse().unwrap()).is_err());
        assert!(private.check("fd00:ec2::254".parse().unwrap()).is_err());
        let listed = AddressPolicy {
            allow_private: false,
            allowed: vec!["127.0.0.0/8".parse().unwrap()],
        };
        assert!(listed.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(listed.check("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(listed.check("10.0.0.1".parse().unwrap()).is_err());
        assert!(listed.check("169.254.169.254".parse().unwrap()).is_err());
    }

    #[tokio::test]
    async fn names_resolving_to_internal_addresses_are_refused() {
        // `localhost` resolves (through the system resolver) to loopback.
        let err = strict()
            .get_json("http://localhost:9/x", None)
            .await
            .unwrap_err();
        assert!(err.detail.contains("refused addresses"), "{err}");
    }
}
