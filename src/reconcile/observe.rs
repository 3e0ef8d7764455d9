//! Observation: what the store and the hosts say exists, turned into the
//! planner's [`Observed`]. Reads only; the caller decides what to record.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::plan::{DomainSeen, Observed, ObservedHost, ObservedVm, Orphan, OrphanKind};
use crate::hosts::owner::{Owners, Verdict};
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
    /// Per host that answered: objects of other instances (and legacy ones
    /// unknown to the store), counted by instance. Reported, never touched.
    pub foreign: Vec<(String, Vec<(String, i64)>)>,
    /// Legacy domains (marks naming no instance) whose VM the store knows:
    /// (host, domain), to be re-marked with this instance.
    pub legacy_known: Vec<(String, String)>,
    /// The VM id of each orphan domain, by (host, domain): its collection
    /// takes the VM's own volume with it.
    pub orphan_vm: HashMap<(String, String), String>,
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
    owners: &Owners,
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
    let mut foreign = Vec::new();
    let mut legacy_known = Vec::new();
    let mut orphan_vm = HashMap::new();
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
        let judged = judge_inventory(inventory, &known_ids, owners);
        for d in &inventory.domains {
            domains.insert((c.name.as_str(), d.name.as_str()), d.running);
        }
        for (kind, name, vm) in judged.orphans {
            if kind == OrphanKind::Domain {
                orphan_vm.insert((c.name.clone(), name.clone()), vm);
            }
            orphans.push((c.name.clone(), kind, name));
        }
        legacy_known.extend(judged.legacy_known.into_iter().map(|d| (c.name.clone(), d)));
        foreign.push((c.name.clone(), judged.foreign));
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
        foreign,
        legacy_known,
        orphan_vm,
    })
}

/// What one host's inventory holds, judged by ownership.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Judged {
    /// Ours (or an adopted instance's) and unknown to the store: (kind,
    /// name, VM id).
    pub orphans: Vec<(OrphanKind, String, String)>,
    /// Objects of other instances, counted by instance (sorted).
    pub foreign: Vec<(String, i64)>,
    /// Legacy domains the store knows: to be re-marked as ours.
    pub legacy_known: Vec<String>,
}

/// Judges every object of an inventory (see [`Owners::judge`]): a domain or
/// container by its mark's instance, a volume by the instance its name
/// names, a network by its instance label. Pure.
pub fn judge_inventory(inventory: &Inventory, known: &HashSet<&str>, owners: &Owners) -> Judged {
    let mut out = Judged::default();
    let mut foreign: std::collections::BTreeMap<String, i64> = Default::default();
    for d in &inventory.domains {
        match owners.judge(
            d.mark.instance.as_deref(),
            known.contains(d.mark.vm_id.as_str()),
        ) {
            Verdict::Known => {}
            Verdict::KnownLegacy => out.legacy_known.push(d.name.clone()),
            Verdict::Orphan => {
                out.orphans
                    .push((OrphanKind::Domain, d.name.clone(), d.mark.vm_id.clone()))
            }
            Verdict::Foreign(i) => *foreign.entry(i).or_default() += 1,
        }
    }
    for v in &inventory.volumes {
        let (instance, id) = match xml::parse_volume(v) {
            Some(name) => (name.instance.map(str::to_string), name.vm_id),
            None => (
                inventory.volume_instances.get(v).cloned(),
                docker::vm_id_of_network(v).unwrap_or_default(),
            ),
        };
        match owners.judge(instance.as_deref(), known.contains(id)) {
            // A legacy volume or network of a known VM: the store is its
            // proof (volumes and labels cannot be re-marked).
            Verdict::Known | Verdict::KnownLegacy => {}
            Verdict::Orphan => out
                .orphans
                .push((OrphanKind::Volume, v.clone(), id.to_string())),
            Verdict::Foreign(i) => *foreign.entry(i).or_default() += 1,
        }
    }
    out.foreign = foreign.into_iter().collect();
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::OwnedDomain;

    const MINE: &str = "0123456789ab";
    const OTHER: &str = "ba9876543210";

    fn domain(vm: &str, instance: Option<&str>) -> OwnedDomain {
        OwnedDomain {
            name: format!("labpool-c-{vm}"),
            running: true,
            mark: xml::Mark {
                vm_id: vm.into(),
                course: "c".into(),
                spec_hash: "s".into(),
                instance: instance.map(str::to_string),
            },
        }
    }

    /// Issue 16 §1: another instance's objects on a shared host, and legacy
    /// ones this store does not know, are never orphans; ours are.
    #[test]
    fn only_our_instances_unknown_objects_are_orphans() {
        let (known, ours, theirs, old_known, old_unknown) = (
            "000000000000000a",
            "000000000000000b",
            "000000000000000c",
            "000000000000000d",
            "000000000000000e",
        );
        let inventory = Inventory {
            domains: vec![
                domain(known, Some(MINE)),
                domain(ours, Some(MINE)),
                domain(theirs, Some(OTHER)),
                domain(old_known, None),
                domain(old_unknown, None),
            ],
            volumes: vec![
                xml::volume_name(MINE, known),
                xml::volume_name(MINE, ours),
                // Another instance's overlay being created (its domain not
                // defined yet): its name says whose it is.
                xml::volume_name(OTHER, theirs),
                format!("labpool-{old_known}.qcow2"),
                format!("labpool-{old_unknown}.qcow2"),
            ],
            volume_instances: HashMap::new(),
        };
        let store: HashSet<&str> = [known, old_known].into();
        let judged = judge_inventory(&inventory, &store, &Owners::new(MINE, &[]));
        assert_eq!(
            judged.orphans,
            vec![
                (
                    OrphanKind::Domain,
                    format!("labpool-c-{ours}"),
                    ours.to_string()
                ),
                (
                    OrphanKind::Volume,
                    xml::volume_name(MINE, ours),
                    ours.to_string()
                ),
            ]
        );
        assert_eq!(judged.legacy_known, vec![format!("labpool-c-{old_known}")]);
        assert_eq!(
            judged.foreign,
            vec![(OTHER.to_string(), 2), ("legacy".to_string(), 2)]
        );

        // The other instance's objects, judged by the other instance: its
        // own, known (nothing to do), and ours foreign to it.
        let theirs_store: HashSet<&str> = [theirs].into();
        let judged = judge_inventory(&inventory, &theirs_store, &Owners::new(OTHER, &[]));
        assert!(judged.orphans.is_empty(), "{:?}", judged.orphans);
        assert_eq!(
            judged.foreign,
            vec![(MINE.to_string(), 4), ("legacy".to_string(), 4)]
        );

        // An instance with an empty store (no courses) touches nothing of
        // anyone's.
        let empty = HashSet::new();
        let judged = judge_inventory(&inventory, &empty, &Owners::new("ffffffffffff", &[]));
        assert!(judged.orphans.is_empty());
        assert!(judged.legacy_known.is_empty());

        // Adopting the other instance makes its unknown objects our orphans.
        let judged = judge_inventory(&inventory, &store, &Owners::new(MINE, &[OTHER.into()]));
        assert!(judged.orphans.contains(&(
            OrphanKind::Domain,
            format!("labpool-c-{theirs}"),
            theirs.to_string()
        )));
        assert!(judged.orphans.contains(&(
            OrphanKind::Volume,
            xml::volume_name(OTHER, theirs),
            theirs.to_string()
        )));
    }

    #[test]
    fn networks_are_judged_by_their_instance_label() {
        let (ours, theirs, old) = ("000000000000000b", "000000000000000c", "000000000000000e");
        let inventory = Inventory {
            domains: vec![],
            volumes: vec![
                docker::network_name(ours),
                docker::network_name(theirs),
                docker::network_name(old),
            ],
            volume_instances: HashMap::from([
                (docker::network_name(ours), MINE.to_string()),
                (docker::network_name(theirs), OTHER.to_string()),
            ]),
        };
        let judged = judge_inventory(&inventory, &HashSet::new(), &Owners::new(MINE, &[]));
        assert_eq!(
            judged.orphans,
            vec![(
                OrphanKind::Volume,
                docker::network_name(ours),
                ours.to_string()
            )]
        );
        assert_eq!(
            judged.foreign,
            vec![(OTHER.to_string(), 1), ("legacy".to_string(), 1)]
        );
    }
}
