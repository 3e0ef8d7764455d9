//! Who a request comes from, and how often that client may do something
//! costly (start a login).
//!
//! The client is the peer address, unless the peer is one of
//! `http.trusted_proxies`: then it is the right-most `X-Forwarded-For`
//! address that is not a trusted proxy (every address left of it was written
//! by the client itself and proves nothing). IPv6 clients count by /64, the
//! block one subscriber usually gets.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

use crate::config::Cidr;

/// The address a request is counted under.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let peer = unmap(peer);
    if !is_trusted(peer) {
        return peer;
    }
    // Several headers count as one list, in order.
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) if is_trusted(ip) => client = ip,
            Some(ip) => return ip,
            // A trusted proxy forwarded garbage: count it under that proxy.
            None => return client,
        }
    }
    client
}

/// `203.0.113.7`, `2001:db8::1`, `[2001:db8::1]:443` or `203.0.113.7:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(unmap(ip));
    }
    hop.parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| unmap(s.ip()))
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The key a client's bucket is kept under: IPv4 as is, IPv6 by /64.
fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// The per-client limit on login initiations: anyone may start one, and
/// each is stored until it is launched or expires.
pub struct LoginGate {
    pub limiter: RateLimiter,
    pub trusted_proxies: Vec<Cidr>,
}

impl LoginGate {
    pub fn new(config: &crate::config::Config) -> LoginGate {
        let limits = &config.lti.logins;
        LoginGate {
            limiter: RateLimiter::new(limits.burst, limits.per_second),
            trusted_proxies: config.http.trusted_proxies.clone(),
        }
    }

    /// Takes a token for the client of a request from `peer` with
    /// `headers`; `Err` carries the client and how long it must wait.
    pub fn admit(&self, peer: IpAddr, headers: &HeaderMap) -> Result<(), (IpAddr, Duration)> {
        let client = client_address(peer, headers, &self.trusted_proxies);
        self.limiter
            .take(client, Instant::now())
            .map_err(|wait| (client, wait))
    }
}

/// Buckets kept at most; beyond it (after dropping the full ones) new
/// addresses share one bucket, so memory stays bounded under a spread-out
/// flood.
const MAX_BUCKETS: usize = 65_536;

/// A token bucket per client: `burst` at once, then `per_second`.
pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<Option<IpAddr>, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(burst: u32, per_second: u32) -> RateLimiter {
        RateLimiter {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_second),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `client`: `Ok` if there was one, else how long
    /// until there is.
    pub fn take(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("buckets");
        let mut key = Some(bucket_key(client));
        if !buckets.contains_key(&key) && buckets.len() >= MAX_BUCKETS {
            self.forget_full(&mut buckets, now);
            if buckets.len() >= MAX_BUCKETS {
                key = None;
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refilled = now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refilled).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        if self.per_second <= 0.0 {
            return Err(Duration::from_secs(3600));
        }
        Err(Duration::from_secs_f64(
            (1.0 - bucket.tokens) / self.per_second,
        ))
    }

    /// Buckets that have refilled are the same as no bucket.
    fn forget_full(&self, buckets: &mut HashMap<Option<IpAddr>, Bucket>, now: Instant) {
        buckets.retain(|_, b| {
            let refilled = now.saturating_duration_since(b.at).as_secs_f64() * self.per_second;
            b.tokens + refilled < self.burst
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy() {
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let xff = headers(&["198.51.100.1, 203.0.113.9"]);
        // No trusted proxies (the default): the peer, whatever the header says.
        assert_eq!(client_address(peer, &xff, &[]), peer);
        // The proxy is trusted: the right-most untrusted address.
        let trusted = cidrs(&["10.0.0.0/8"]);
        assert_eq!(
            client_address(peer, &xff, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // A chain of trusted proxies is skipped; a spoofed left part is not believed.
        let chain = headers(&["6.6.6.6, 203.0.113.9", "10.1.1.1"]);
        assert_eq!(
            client_address(peer, &chain, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // A peer that is not a trusted proxy cannot name another client.
        let stranger: IpAddr = "192.0.2.4".parse().unwrap();
        assert_eq!(client_address(stranger, &xff, &trusted), stranger);
        // Garbage from the proxy: counted under the proxy.
        assert_eq!(
            client_address(peer, &headers(&["not-an-ip"]), &trusted),
            peer
        );
        // Ports and brackets are tolerated; mapped IPv4 is IPv4.
        assert_eq!(
            client_address(peer, &headers(&["[2001:db8::1]:443"]), &trusted),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_address("::ffff:10.0.0.5".parse().unwrap(), &xff, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_bucket_per_client_refills_at_its_rate() {
        let limiter = RateLimiter::new(3, 2);
        let t = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.take(a, t).is_ok());
        }
        let wait = limiter.take(a, t).unwrap_err();
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        assert!(
            limiter.take(b, t).is_ok(),
            "another client has its own bucket"
        );
        assert!(limiter.take(a, t + Duration::from_millis(500)).is_ok());
        assert!(limiter.take(a, t + Duration::from_millis(500)).is_err());
        // One IPv6 /64 is one client.
        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.take(v6a, t).is_ok());
        }
        assert!(limiter.take(v6b, t).is_err());
    }
}
