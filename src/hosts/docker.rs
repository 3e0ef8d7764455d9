//! Docker engines as hosts of container courses, through bollard.
//!
//! A container lab is one container plus one network of its own, made
//! together and removed together. The container plays the part of a VM's
//! domain, its network the part of a VM's overlay volume: the store row names
//! both (`domain`, `volume`), the inventory lists both, and orphans of either
//! kind are collected the same way. Ownership is decided by labpool's labels
//! (the containers' and networks' counterpart of a domain's metadata mark),
//! never by a name alone.
//!
//! Isolation: each network is `internal` (no route out of it), with
//! inter-container traffic off and no address for the host on its bridge, so
//! a student's container reaches neither another student's container nor the
//! host (its metadata service, labpool, the database). The engine enforces
//! the CPU, memory and process limits; the container gets no capabilities it
//! would need to undo any of that.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, HostConfig, NetworkCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;

use super::owner::{Owners, Removal};
use super::xml::Mark;
use super::{HostError, Inventory, OwnedDomain};
use crate::config::HostConfig as LabpoolHost;

/// Every labpool container and network carries its VM id here.
pub const LABEL_VM: &str = "dev.labpool.vm";
/// The course a container belongs to.
pub const LABEL_COURSE: &str = "dev.labpool.course";
/// The course build (spec hash) a container was made from.
pub const LABEL_SPEC: &str = "dev.labpool.spec";
/// The labpool instance (its store's id) that made a container or network.
/// Labels cannot change on an existing object, so a legacy one (without
/// it) stays so: the store knowing it is its only proof of ownership.
pub const LABEL_INSTANCE: &str = "dev.labpool.instance";

/// Seconds bollard waits for one engine request.
const REQUEST_TIMEOUT: u64 = 60;

/// Name of a container lab's own network.
pub fn network_name(vm_id: &str) -> String {
    format!("labpool-net-{vm_id}")
}

/// The VM id in a network's name, if it has labpool's exact form.
pub fn vm_id_of_network(name: &str) -> Option<&str> {
    let id = name.strip_prefix("labpool-net-")?;
    (id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then_some(id)
}

/// A client for the engine at `config.uri`. bollard connects lazily, per
/// request; only a missing socket file fails here.
pub fn connect(config: &LabpoolHost) -> Result<Docker, HostError> {
    let uri = config.uri.as_str();
    let version = bollard::API_DEFAULT_VERSION;
    let client = if uri.starts_with("unix://") {
        Docker::connect_with_unix(uri, REQUEST_TIMEOUT, version)
    } else {
        match &config.tls {
            Some(tls) => Docker::connect_with_ssl(
                uri,
                &tls.key,
                &tls.cert,
                &tls.ca,
                REQUEST_TIMEOUT,
                version,
            ),
            None => Docker::connect_with_http(uri, REQUEST_TIMEOUT, version),
        }
    };
    client.map_err(|e| HostError::Unreachable {
        host: config.name.clone(),
        message: e.to_string(),
    })
}

/// An engine's error as a [`HostError`]: an answer from the engine is a
/// failure of the operation, anything else means the engine is unreachable.
pub fn error(host: &str, op: &'static str, e: DockerError) -> HostError {
    match e {
        DockerError::DockerResponseServerError { message, .. } => HostError::Failed {
            host: host.to_string(),
            op,
            message,
        },
        e => HostError::Unreachable {
            host: host.to_string(),
            message: with_causes(&e),
        },
    }
}

/// An error and what caused it: the client's own message ("client error
/// (SendRequest)") says little; the cause says "connection refused" or which
/// certificate the engine refused.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = c.source();
    }
    message
}

fn not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn labelled() -> HashMap<&'static str, Vec<&'static str>> {
    HashMap::from([("label", vec![LABEL_VM])])
}

/// Every container and network on the engine that is labpool's.
pub async fn inventory(docker: &Docker, host: &str) -> Result<Inventory, HostError> {
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&labelled())
        .build();
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| error(host, "list containers", e))?;
    let domains = containers
        .into_iter()
        .filter_map(|c| {
            let labels = c.labels?;
            let name = c.names?.into_iter().next()?;
            Some(OwnedDomain {
                name: name.trim_start_matches('/').to_string(),
                running: c.state == Some(ContainerSummaryStateEnum::RUNNING),
                mark: Mark {
                    vm_id: labels.get(LABEL_VM)?.clone(),
                    course: labels.get(LABEL_COURSE).cloned().unwrap_or_default(),
                    spec_hash: labels.get(LABEL_SPEC).cloned().unwrap_or_default(),
                    instance: labels.get(LABEL_INSTANCE).cloned(),
                },
            })
        })
        .collect();
    let options = ListNetworksOptionsBuilder::default()
        .filters(&labelled())
        .build();
    let networks = docker
        .list_networks(Some(options))
        .await
        .map_err(|e| error(host, "list networks", e))?;
    let mut volume_instances = HashMap::new();
    let mut volumes = Vec::new();
    for n in networks {
        let Some(name) = n.name.filter(|n| vm_id_of_network(n).is_some()) else {
            continue;
        };
        if let Some(i) = n.labels.as_ref().and_then(|l| l.get(LABEL_INSTANCE)) {
            volume_instances.insert(name.clone(), i.clone());
        }
        volumes.push(name);
    }
    Ok(Inventory {
        domains,
        volumes,
        volume_instances,
    })
}

/// A container lab to make.
#[derive(Debug, Clone)]
pub struct NewContainer<'a> {
    pub mark: Mark,
    pub name: &'a str,
    pub network: &'a str,
    pub spec: &'a crate::course::spec::ContainerSpec,
}

/// Makes the lab's network and container and starts it. On failure, what
/// was made stays (labelled) for the caller's destroy or orphan collection.
pub async fn create(docker: &Docker, host: &str, new: &NewContainer<'_>) -> Result<(), HostError> {
    let mut labels = HashMap::from([
        (LABEL_VM.to_string(), new.mark.vm_id.clone()),
        (LABEL_COURSE.to_string(), new.mark.course.clone()),
        (LABEL_SPEC.to_string(), new.mark.spec_hash.clone()),
    ]);
    if let Some(instance) = &new.mark.instance {
        labels.insert(LABEL_INSTANCE.to_string(), instance.clone());
    }
    let network = NetworkCreateRequest {
        name: new.network.to_string(),
        driver: Some("bridge".into()),
        internal: Some(true),
        options: Some(HashMap::from([
            // No traffic between containers on the network (there is only
            // one, but the engine must not let a second one in either)...
            (
                "com.docker.network.bridge.enable_icc".into(),
                "false".into(),
            ),
            // ...and no address for the host on its bridge: nothing on the
            // host answers the container.
            (
                "com.docker.network.bridge.inhibit_ipv4".into(),
                "true".into(),
            ),
        ])),
        labels: Some(labels.clone()),
        ..Default::default()
    };
    docker
        .create_network(network)
        .await
        .map_err(|e| error(host, "create network", e))?;
    let spec = new.spec;
    let memory = i64::try_from(spec.memory.as_bytes()).unwrap_or(i64::MAX);
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        hostname: Some("lab".into()),
        labels: Some(labels),
        // The image's own shell waits on a terminal instead of exiting.
        tty: Some(spec.command.is_none()),
        open_stdin: Some(spec.command.is_none()),
        host_config: Some(HostConfig {
            nano_cpus: Some(spec.nano_cpus()),
            memory: Some(memory),
            memory_swap: Some(memory),
            pids_limit: Some(512),
            init: Some(true),
            network_mode: Some(new.network.to_string()),
            cap_drop: Some(vec![
                "NET_RAW".into(),
                "NET_ADMIN".into(),
                "SYS_ADMIN".into(),
            ]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default()
        .name(new.name)
        .build();
    docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| error(host, "create container", e))?;
    docker
        .start_container(new.name, None)
        .await
        .map_err(|e| error(host, "start container", e))
}

/// Removes a lab's container (with its anonymous volumes) and its network.
/// Either being gone already is fine: destroys are retried.
pub async fn destroy(
    docker: &Docker,
    host: &str,
    container: &str,
    network: &str,
) -> Result<(), HostError> {
    remove_container(docker, host, container).await?;
    remove_network(docker, host, network).await
}

async fn remove_container(docker: &Docker, host: &str, name: &str) -> Result<(), HostError> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(name, Some(options)).await {
        // 409: another task is removing it already (an orphan network and
        // its container collected in the same pass).
        Err(e) if !not_found(&e) && !conflict(&e) => Err(error(host, "remove container", e)),
        _ => Ok(()),
    }
}

fn conflict(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 409,
            ..
        }
    )
}

async fn remove_network(docker: &Docker, host: &str, name: &str) -> Result<(), HostError> {
    match docker.remove_network(name).await {
        Err(e) if !not_found(&e) => Err(error(host, "remove network", e)),
        _ => Ok(()),
    }
}

/// Do these labels mark an object of `owners` (its instance label ours)?
fn owned(labels: Option<&HashMap<String, String>>, owners: &Owners) -> bool {
    labels.is_some_and(|l| {
        l.contains_key(LABEL_VM) && owners.owns(l.get(LABEL_INSTANCE).map(String::as_str))
    })
}

/// Removes one orphan, after checking again that its labels name this
/// labpool's instance: ownership is decided by the labels, never by a name
/// from an earlier listing. A container takes its own network with it.
pub async fn remove_orphan(
    docker: &Docker,
    host: &str,
    is_container: bool,
    name: &str,
    owners: &Owners,
) -> Result<Removal, HostError> {
    if is_container {
        let network = match docker.inspect_container(name, None).await {
            Ok(c) => {
                let labels = c.config.and_then(|c| c.labels);
                if !owned(labels.as_ref(), owners) {
                    return Ok(Removal::NotOurs);
                }
                let vm = labels.as_ref().and_then(|l| l.get(LABEL_VM)).cloned();
                c.host_config
                    .and_then(|h| h.network_mode)
                    .filter(|n| vm.is_some() && vm_id_of_network(n) == vm.as_deref())
            }
            Err(e) if not_found(&e) => return Ok(Removal::Gone),
            Err(e) => return Err(error(host, "inspect container", e)),
        };
        remove_container(docker, host, name).await?;
        // Its own network goes with it (checked again like any orphan).
        let mut with = None;
        if let Some(network) = network
            && let Removal::Removed(_) =
                Box::pin(remove_orphan(docker, host, false, &network, owners)).await?
        {
            with = Some(network);
        }
        Ok(Removal::Removed(with))
    } else {
        let Some(id) = vm_id_of_network(name) else {
            return Ok(Removal::NotOurs);
        };
        let network = match docker.inspect_network(name, None).await {
            Ok(n) if owned(n.labels.as_ref(), owners) => n,
            Ok(_) => return Ok(Removal::NotOurs),
            Err(e) if not_found(&e) => return Ok(Removal::Gone),
            Err(e) => return Err(error(host, "inspect network", e)),
        };
        // A network still holding its lab's own container (an orphan of the
        // same lab, collected in the same pass) cannot go first: that
        // container goes with it. Anything else attached is not ours to
        // remove, and keeps the network.
        for attached in network.containers.unwrap_or_default().into_keys() {
            let own = match docker.inspect_container(&attached, None).await {
                Ok(c) => {
                    let labels = c.config.and_then(|c| c.labels);
                    owned(labels.as_ref(), owners)
                        && labels.is_some_and(|l| l.get(LABEL_VM).is_some_and(|v| v == id))
                }
                Err(e) if not_found(&e) => continue,
                Err(e) => return Err(error(host, "inspect container", e)),
            };
            if !own {
                return Ok(Removal::InUse);
            }
            remove_container(docker, host, &attached).await?;
        }
        // A container removed just now (here or by its own collection) may
        // hold its endpoint for a moment longer.
        let mut pause = Duration::from_millis(50);
        loop {
            match remove_network(docker, host, name).await {
                Err(e) if pause < Duration::from_secs(2) => {
                    tracing::debug!(error = %e, "network still in use; trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                done => return done.map(|()| Removal::Removed(None)),
            }
        }
    }
}

/// Runs `cmd` in the container to its end: its exit code.
pub async fn run(
    docker: &Docker,
    host: &str,
    container: &str,
    cmd: &[String],
    user: Option<&str>,
) -> Result<i64, HostError> {
    let exec = docker
        .create_exec(
            container,
            bollard::models::ExecConfig {
                cmd: Some(cmd.to_vec()),
                user: user.map(str::to_string),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| error(host, "create exec", e))?;
    if let bollard::exec::StartExecResults::Attached { mut output, .. } = docker
        .start_exec(&exec.id, None)
        .await
        .map_err(|e| error(host, "start exec", e))?
    {
        while output.next().await.is_some() {}
    }
    let done = docker
        .inspect_exec(&exec.id)
        .await
        .map_err(|e| error(host, "inspect exec", e))?;
    Ok(done.exit_code.unwrap_or(-1))
}

/// Waits until `cmd` exits 0 in the container, trying again with a growing
/// pause. The caller's timeout ends the wait.
pub async fn wait_for_command(
    docker: &Docker,
    host: &str,
    container: &str,
    cmd: &[String],
    user: Option<&str>,
) -> Result<(), String> {
    let mut pause = Duration::from_millis(50);
    loop {
        match run(docker, host, container, cmd, user).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            // The container is gone or broken: waiting will not help.
            Err(e @ HostError::Failed { .. }) => return Err(e.to_string()),
            Err(_) => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Reads the container's output until `marker` appears.
pub async fn wait_for_marker(docker: &Docker, container: &str, marker: &str) -> Result<(), String> {
    let options = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut logs = docker.logs(container, Some(options));
    let needle = marker.as_bytes();
    let mut window: Vec<u8> = Vec::new();
    while let Some(chunk) = logs.next().await {
        let chunk = chunk.map_err(|e| format!("reading the container's output: {e}"))?;
        window.extend_from_slice(&chunk.into_bytes());
        if window.windows(needle.len()).any(|w| w == needle) {
            return Ok(());
        }
        let keep = needle.len().saturating_sub(1);
        if window.len() > keep {
            window.drain(..window.len() - keep);
        }
    }
    Err(format!("the container stopped before `{marker}` appeared"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_names_round_trip_and_refuse_others() {
        let name = network_name("0123456789abcdef");
        assert_eq!(vm_id_of_network(&name), Some("0123456789abcdef"));
        assert_eq!(vm_id_of_network("labpool-net-short"), None);
        assert_eq!(vm_id_of_network("bridge"), None);
        assert_eq!(vm_id_of_network("labpool-net-0123456789ABCDEF"), None);
    }
}
