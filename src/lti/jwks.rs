//! Platform keys: fetched from the JWKS URL of the registration (never from
//! a URL a token names: `jku`/`x5u` are ignored), cached by kid, and fetched
//! again when a token names a kid the cache lacks. Those refetches draw on a
//! small bucket per URL ([`REFETCH_BURST`], refilled one per
//! [`REFETCH_EVERY`]), so a real rotation is picked up at once while forged
//! kids cannot make labpool hammer the platform.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm, PublicKeyUse};

/// Refetches on unknown kids allowed in a burst, per URL.
pub const REFETCH_BURST: f64 = 3.0;
/// One more refetch is allowed per this much time.
pub const REFETCH_EVERY: Duration = Duration::from_secs(20);
/// Keys are kept this long when the platform's answer says nothing.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum JwksError {
    #[error("the platform's JWKS at {url} has no key `{kid}`")]
    UnknownKid { url: String, kid: String },
    #[error("cannot fetch the platform's JWKS at {url}: {reason}")]
    Fetch { url: String, reason: String },
}

struct Cached {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Instant,
    max_age: Duration,
}

/// The cache of every platform's keys; one per labpool process.
pub struct PlatformKeys {
    http: reqwest::Client,
    /// For platforms registered through Dynamic Registration, whose JWKS
    /// URL a stranger chose: no internal addresses (see `egress`).
    egress: super::egress::Egress,
    cache: RwLock<HashMap<String, Cached>>,
    /// Serialises fetches; the refetch bucket of each URL.
    fetches: tokio::sync::Mutex<HashMap<String, Bucket>>,
}

impl PlatformKeys {
    pub fn new(http: reqwest::Client, egress: super::egress::Egress) -> PlatformKeys {
        PlatformKeys {
            http,
            egress,
            cache: RwLock::new(HashMap::new()),
            fetches: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The key `kid` of the JWKS at `url`; `guarded` for a URL that came
    /// from a Dynamic Registration (fetched through `egress`).
    pub async fn key(&self, url: &str, kid: &str, guarded: bool) -> Result<DecodingKey, JwksError> {
        if let Some(key) = self.cached(url, kid, true) {
            return Ok(key);
        }
        let mut fetches = self.fetches.lock().await;
        // Someone else may have fetched while this waited.
        if let Some(key) = self.cached(url, kid, true) {
            return Ok(key);
        }
        let first = !fetches.contains_key(url);
        let bucket = fetches.entry(url.to_owned()).or_insert_with(Bucket::full);
        if first || bucket.take() {
            match self.fetch(url, guarded).await {
                Ok(fetched) => {
                    self.cache
                        .write()
                        .expect("jwks cache")
                        .insert(url.to_owned(), fetched);
                }
                Err(reason) => {
                    // A stale key beats no key while the platform is down.
                    if let Some(key) = self.cached(url, kid, false) {
                        tracing::warn!(%url, %reason, "JWKS refresh failed; using cached keys");
                        return Ok(key);
                    }
                    return Err(JwksError::Fetch {
                        url: url.to_owned(),
                        reason,
                    });
                }
            }
        }
        self.cached(url, kid, false)
            .ok_or_else(|| JwksError::UnknownKid {
                url: url.to_owned(),
                kid: kid.to_owned(),
            })
    }

    fn cached(&self, url: &str, kid: &str, fresh_only: bool) -> Option<DecodingKey> {
        let cache = self.cache.read().expect("jwks cache");
        let entry = cache.get(url)?;
        if fresh_only && entry.fetched_at.elapsed() > entry.max_age {
            return None;
        }
        entry.keys.get(kid).cloned()
    }

    async fn fetch(&self, url: &str, guarded: bool) -> Result<Cached, String> {
        let response = if guarded {
            self.egress.get(url).await.map_err(|e| e.detail)?
        } else {
            let response = self
                .http
                .get(url)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("HTTP {}", response.status()));
            }
            response
        };
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .map(|d| d.clamp(Duration::from_secs(60), Duration::from_secs(86_400)))
            .unwrap_or(DEFAULT_MAX_AGE);
        let body = super::egress::read_capped(response).await?;
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = &jwk.common.key_id else {
                continue;
            };
            // Only RSA signature keys for RS256: a platform key of another
            // kind can never verify a launch.
            let usable = matches!(jwk.algorithm, AlgorithmParameters::RSA(_))
                && jwk
                    .common
                    .key_algorithm
                    .is_none_or(|a| a == KeyAlgorithm::RS256)
                && jwk
                    .common
                    .public_key_use
                    .as_ref()
                    .is_none_or(|u| *u == PublicKeyUse::Signature);
            if !usable {
                continue;
            }
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid.clone(), key);
            }
        }
        tracing::debug!(%url, keys = keys.len(), "fetched platform JWKS");
        Ok(Cached {
            keys,
            fetched_at: Instant::now(),
            max_age,
        })
    }
}

/// A token bucket: refetches left, refilled over time.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full() -> Bucket {
        Bucket {
            tokens: REFETCH_BURST,
            at: Instant::now(),
        }
    }

    /// Takes a token if one is left.
    fn take(&mut self) -> bool {
        let refill = self.at.elapsed().as_secs_f64() / REFETCH_EVERY.as_secs_f64();
        self.tokens = (self.tokens + refill).min(REFETCH_BURST);
        self.at = Instant::now();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// `max-age` of a Cache-Control value.
fn max_age(header: &str) -> Option<Duration> {
    header.split(',').find_map(|part| {
        let (name, value) = part.trim().split_once('=')?;
        (name.eq_ignore_ascii_case("max-age"))
            .then(|| value.trim().parse().ok().map(Duration::from_secs))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refetches_come_in_a_small_burst_then_slowly() {
        let mut bucket = Bucket::full();
        let taken = (0..10).filter(|_| bucket.take()).count();
        assert_eq!(taken, REFETCH_BURST as usize);
        bucket.at -= REFETCH_EVERY;
        assert!(bucket.take());
        assert!(!bucket.take());
    }

    #[test]
    fn reads_max_age() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("no-store"), None);
        assert_eq!(max_age("max-age=x"), None);
    }
}
