//! Platform registrations: from the configuration file, and from Dynamic
//! Registration (in the store, so every replica knows them). Launches look
//! them up by issuer and client id on every request, so the stored ones are
//! cached for a moment.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::config::PlatformConfig;
use crate::store::{PlatformRow, Store, StoreError};

/// How long stored registrations are trusted before being read again.
const STORED_TTL: Duration = Duration::from_secs(2);

/// One platform labpool trusts: what a configured platform says (the
/// same six values a Dynamic Registration stores), and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub platform: PlatformConfig,
    /// Registered through Dynamic Registration: its deployments are learned
    /// from signed launches (Canvas names a deployment only when it launches).
    pub dynamic: bool,
}

impl Registration {
    pub fn allows_deployment(&self, deployment_id: &str) -> bool {
        self.dynamic
            || self
                .platform
                .deployment_ids
                .iter()
                .any(|d| d == deployment_id)
    }

    fn from_row(row: &PlatformRow) -> Registration {
        Registration {
            platform: PlatformConfig {
                issuer: row.issuer.clone(),
                client_id: row.client_id.clone(),
                deployment_ids: serde_json::from_str(&row.deployment_ids).unwrap_or_default(),
                auth_login_url: row.auth_login_url.clone(),
                token_url: row.token_url.clone(),
                jwks_url: row.jwks_url.clone(),
                any_course: false,
            },
            dynamic: true,
        }
    }
}

pub struct Registry {
    configured: Vec<Registration>,
    store: Store,
    stored: RwLock<Option<(Instant, Arc<Vec<Registration>>)>>,
}

impl Registry {
    pub fn new(configured: &[PlatformConfig], store: Store) -> Registry {
        Registry {
            configured: configured
                .iter()
                .map(|p| Registration {
                    platform: p.clone(),
                    dynamic: false,
                })
                .collect(),
            store,
            stored: RwLock::new(None),
        }
    }

    /// Registrations of `issuer`; with `client_id`, only that one. The
    /// configuration file wins over a stored registration of the same pair.
    pub async fn find(
        &self,
        issuer: &str,
        client_id: Option<&str>,
    ) -> Result<Vec<Registration>, StoreError> {
        let stored = self.stored().await?;
        let mut found: Vec<Registration> = Vec::new();
        for r in self.configured.iter().chain(stored.iter()) {
            let wanted =
                r.platform.issuer == issuer && client_id.is_none_or(|c| c == r.platform.client_id);
            let shadowed = found.iter().any(|f| {
                f.platform.issuer == r.platform.issuer
                    && f.platform.client_id == r.platform.client_id
            });
            if wanted && !shadowed {
                found.push(r.clone());
            }
        }
        Ok(found)
    }

    /// Registrations of `issuer` as the store has them now (not cached):
    /// for deciding whether a new registration may be added.
    pub async fn find_fresh(&self, issuer: &str) -> Result<Vec<Registration>, StoreError> {
        self.forget_cache();
        self.find(issuer, None).await
    }

    /// Records a deployment first seen in a verified launch of a dynamically
    /// registered platform.
    pub async fn learn_deployment(
        &self,
        registration: &Registration,
        deployment_id: &str,
    ) -> Result<(), StoreError> {
        if !registration.dynamic
            || registration
                .platform
                .deployment_ids
                .iter()
                .any(|d| d == deployment_id)
        {
            return Ok(());
        }
        let mut ids = registration.platform.deployment_ids.clone();
        ids.push(deployment_id.to_owned());
        self.store
            .set_platform_deployments(
                &registration.platform.issuer,
                &registration.platform.client_id,
                &serde_json::to_string(&ids).expect("strings serialize"),
            )
            .await?;
        tracing::info!(issuer = %registration.platform.issuer, client_id = %registration.platform.client_id,
            deployment_id, "learned a deployment of a dynamically registered platform");
        self.forget_cache();
        Ok(())
    }

    /// The web origins of every registered platform (configured and
    /// stored): its issuer's and its authorization endpoint's, the pages an
    /// LMS frames a tool from on most platforms.
    pub async fn origins(&self) -> Result<Vec<String>, StoreError> {
        let stored = self.stored().await?;
        let mut origins: Vec<String> = self
            .configured
            .iter()
            .chain(stored.iter())
            .flat_map(|r| {
                [
                    super::origin_of(&r.platform.issuer),
                    super::origin_of(&r.platform.auth_login_url),
                ]
            })
            .filter(|o| !o.is_empty())
            .collect();
        origins.sort();
        origins.dedup();
        Ok(origins)
    }

    /// Makes the next lookup read the store (after a registration).
    pub fn forget_cache(&self) {
        *self.stored.write().expect("registry") = None;
    }

    async fn stored(&self) -> Result<Arc<Vec<Registration>>, StoreError> {
        if let Some((at, regs)) = &*self.stored.read().expect("registry")
            && at.elapsed() < STORED_TTL
        {
            return Ok(regs.clone());
        }
        let regs: Arc<Vec<Registration>> = Arc::new(
            self.store
                .platforms()
                .await?
                .iter()
                .map(Registration::from_row)
                .collect(),
        );
        *self.stored.write().expect("registry") = Some((Instant::now(), regs.clone()));
        Ok(regs)
    }
}
