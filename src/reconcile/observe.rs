//! Observation: what the store and the hosts say exists, turned into the
//! planner's [`Observed`]. Reads only; the caller decides what to record.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::plan::{DomainSeen, Observed, ObservedHost, ObservedVm, Orphan, OrphanKind};
use crate::hosts::{Host, HostError, Inventory, docker, xml};
use crate::store::{SessionRow, Store, StoreError, VmRow};

/// A host that does not answer within this long counts as down for the pass.
const INVENTORY_TIMEOUT: Duration = Duration::from_secs(15);

/// Hosts looked at in parallel.
const INVENTORIES_AT_ONCE: usize = 4;

/// One pass's view of the world, with the rows it came from.
pub struct World {
    pub observed: Observed,
    pub vms: HashMap<String, VmRow>,
    pub sessions_by_vm: HashMap<String, SessionRow>,
    /// Per host: `None` when it answered, else why not.
    pub host_errors: Vec<(String, Option<String>)>,
}

/// Looks at every host (in parallel, each on the blocking pool) and then at
/// the store. Hosts first: a create records its row before it touches a
/// host, so anything a host shows already has its row when the store is read
/// afterwards; only a destroy finishing in between can make something look
/// orphaned for a moment, which the orphan grace period absorbs.
pub async fn observe(
    store: &Store,
    hosts: &[Arc<Host>],
    boots_per_host: u32,
    known_courses: Vec<String>,
    now: i64,
    first_seen: &mut HashMap<(String, OrphanKind, String), i64>,
) -> Result<World, StoreError> {
    // A few hosts at a time: each inventory's replies are held in memory
    // until it is done, and the blocking pool is small. The timeout starts
    // once a host's turn comes, so a slow host delays others only by it.
    let turns = Arc::new(tokio::sync::Semaphore::new(INVENTORIES_AT_ONCE));
    let looks = hosts.iter().map(|host| {
        let host = Arc::clone(host);
        let turns = Arc::clone(&turns);
        async move {
            let _turn = turns.acquire_owned().await.expect("semaphore open");
            let result = tokio::time::timeout(INVENTORY_TIMEOUT, host.inventory_any())
                .await
                .unwrap_or_else(|_| {
                    Err(HostError::Unreachable {
                        host: host.name().to_string(),
                        message: format!("no answer within {}s", INVENTORY_TIMEOUT.as_secs()),
                    })
                });
            (host, result)
        }
    });
    let inventories: Vec<(Arc<Host>, Result<Inventory, HostError>)> = futures_join_all(looks).await;

    let rows = store.vms().await?;
    let sessions = store.live_sessions().await?;
    let sessions_by_vm: HashMap<String, SessionRow> =
        sessions.into_iter().map(|s| (s.vm_id.clone(), s)).collect();
    let known_ids: HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();

    let drained: HashSet<String> = store
        .hosts()
        .await?
        .into_iter()
        .filter(|h| h.draining)
        .map(|h| h.name)
        .collect();
    let mut observed_hosts = Vec::new();
    let mut host_errors = Vec::new();
    let mut domains: HashMap<(&str, &str), bool> = HashMap::new();
    let mut orphans = Vec::new();
    let mut still_seen = HashSet::new();
    for (host, result) in &inventories {
        let c = &host.config;
        observed_hosts.push(ObservedHost {
            name: c.name.clone(),
            up: result.is_ok(),
            max_vms: c.capacity.vms,
            memory: c.capacity.memory.as_bytes(),
            vcpu_slots: c.capacity.vcpu_slots(),
            images: c
                .images
                .as_ref()
                .map(|list| list.iter().map(|i| i.as_str().to_string()).collect()),
            boots_per_host,
            draining: drained.contains(c.name.as_str()),
            runtime: c.runtime,
        });
        host_errors.push((c.name.clone(), result.as_ref().err().map(|e| e.to_string())));
        let Ok(inventory) = result else { continue };
        for d in &inventory.domains {
            domains.insert((c.name.as_str(), d.name.as_str()), d.running);
            if !known_ids.contains(d.mark.vm_id.as_str()) {
                orphans.push((c.name.clone(), OrphanKind::Domain, d.name.clone()));
            }
        }
        for v in &inventory.volumes {
            let id = xml::vm_id_of_volume(v)
                .or_else(|| docker::vm_id_of_network(v))
                .unwrap_or_default();
            if !known_ids.contains(id) {
                orphans.push((c.name.clone(), OrphanKind::Volume, v.clone()));
            }
        }
    }
    let orphans: Vec<Orphan> = orphans
        .into_iter()
        .map(|(host, kind, name)| {
            let key = (host.clone(), kind, name.clone());
            let seen = *first_seen.entry(key.clone()).or_insert(now);
            still_seen.insert(key);
            Orphan {
                host,
                kind,
                name,
                first_seen: seen,
            }
        })
        .collect();
    first_seen.retain(|k, _| still_seen.contains(k));

    let up: HashSet<&str> = observed_hosts
        .iter()
        .filter(|h| h.up)
        .map(|h| h.name.as_str())
        .collect();
    let vms = rows
        .iter()
        .map(|r| ObservedVm {
            id: r.id.clone(),
            course: r.course.clone(),
            host: r.host.clone(),
            spec_hash: r.spec_hash.clone(),
            state: r.state,
            since: r.state_changed_at,
            vcpus: u32::try_from(r.vcpus).unwrap_or(u32::MAX),
            memory: u64::try_from(r.memory).unwrap_or(0),
            session_expires: sessions_by_vm.get(&r.id).map(|s| s.expires_at),
            session_active: sessions_by_vm.get(&r.id).map(|s| s.last_activity_at),
            domain: if !up.contains(r.host.as_str()) {
                DomainSeen::Unknown
            } else {
                match domains.get(&(r.host.as_str(), r.domain.as_str())) {
                    Some(true) => DomainSeen::Running,
                    Some(false) => DomainSeen::Stopped,
                    None => DomainSeen::Missing,
                }
            },
        })
        .collect();
    Ok(World {
        observed: Observed {
            now,
            hosts: observed_hosts,
            vms,
            orphans,
            known_courses,
            stored_idle_ms: Default::default(),
        },
        vms: rows.into_iter().map(|r| (r.id.clone(), r)).collect(),
        sessions_by_vm,
        host_errors,
    })
}

/// Awaits futures concurrently, keeping their order.
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("inventory task"));
    }
    out
}
