//! The courses a launch may open: those of the revision applied last, read
//! from the store (so a launch-only replica needs no course source), kept
//! in memory for a moment because a class's first minute brings hundreds of
//! launches at once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::course::Course;
use crate::store::{Store, StoreError};

/// How stale the in-memory catalog may be: a course added or changed is
/// launchable within this of being applied.
const TTL: Duration = Duration::from_secs(1);

/// What a launch needs to know about a course.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchableCourse {
    pub name: String,
    pub title: String,
    pub spec_hash: String,
    pub max: u32,
    /// Hard session expiry, from the claim.
    pub expiry_ms: i64,
    pub idle_ms: i64,
    /// How the terminal reaches the VM.
    pub console: crate::course::spec::Console,
    /// The account an SSH console logs in as.
    pub ssh_user: Option<String>,
    /// Who may launch it (`lti.platforms`) and from where (`lti.contexts`).
    pub lti: crate::course::spec::LtiSpec,
    /// `session.per_user`: labs of this course one student may hold.
    pub per_user: u32,
}

impl LaunchableCourse {
    /// Whether a launch through `registration`'s deployment `deployment`
    /// may open this course.
    pub fn allows(&self, registration: &super::platforms::Registration, deployment: &str) -> bool {
        registration.platform.any_course
            || self.lti.allows(&registration.platform.issuer, deployment)
    }
}

#[derive(Debug, Default)]
pub struct Catalog {
    pub courses: Vec<Arc<LaunchableCourse>>,
    by_name: HashMap<String, Arc<LaunchableCourse>>,
    by_context: HashMap<String, Arc<LaunchableCourse>>,
}

impl Catalog {
    pub fn course(&self, name: &str) -> Option<&Arc<LaunchableCourse>> {
        self.by_name.get(name)
    }

    /// The course whose file lists LMS context `context_id`.
    pub fn for_context(&self, context_id: &str) -> Option<&Arc<LaunchableCourse>> {
        self.by_context.get(context_id)
    }
}

pub struct Catalogs {
    store: Store,
    cached: RwLock<Option<(Instant, Arc<Catalog>)>>,
    /// One reload at a time; the others use what it loads.
    loading: tokio::sync::Mutex<()>,
}

impl Catalogs {
    pub fn new(store: Store) -> Catalogs {
        Catalogs {
            store,
            cached: RwLock::new(None),
            loading: tokio::sync::Mutex::new(()),
        }
    }

    pub async fn get(&self) -> Result<Arc<Catalog>, StoreError> {
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        let _turn = self.loading.lock().await;
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        let catalog = Arc::new(self.load().await?);
        *self.cached.write().expect("catalog") = Some((Instant::now(), catalog.clone()));
        Ok(catalog)
    }

    fn fresh(&self) -> Option<Arc<Catalog>> {
        match &*self.cached.read().expect("catalog") {
            Some((at, catalog)) if at.elapsed() < TTL => Some(catalog.clone()),
            _ => None,
        }
    }

    async fn load(&self) -> Result<Catalog, StoreError> {
        let mut catalog = Catalog::default();
        for row in self.store.applied_courses().await? {
            let Ok(course) = serde_json::from_str::<Course>(&row.spec_json) else {
                tracing::warn!(course = %row.name, "stored course does not parse; not launchable");
                continue;
            };
            let entry = Arc::new(LaunchableCourse {
                name: row.name.clone(),
                title: row.title.clone(),
                spec_hash: row.spec_hash.clone(),
                max: course.pool.max,
                expiry_ms: course.session.expiry.get().as_millis() as i64,
                idle_ms: course.session.idle.get().as_millis() as i64,
                console: course.session.console,
                ssh_user: course.session.ssh.as_ref().map(|s| s.user.clone()),
                lti: course.lti.clone(),
                per_user: course.session.per_user,
            });
            for context in &course.lti.contexts {
                catalog.by_context.insert(context.clone(), entry.clone());
            }
            catalog.by_name.insert(row.name.clone(), entry.clone());
            catalog.courses.push(entry);
        }
        Ok(catalog)
    }
}
