//! A throwaway labpool world for reconciler tests: a temp folder with course
//! files, a SQLite store, libvirt test hosts (node XML files) and the
//! configuration tying them together.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use labpool::config::Config;
use labpool::reconcile::Reconciler;
use labpool::store::{Store, VmRow, VmState};

pub struct Lab {
    pub dir: tempfile::TempDir,
}

/// A libvirt test-driver node with a `labpool` storage pool holding the
/// base volume `base.qcow2`.
pub fn test_node_xml(cpus: u32) -> String {
    format!(
        "<node>\n  <cpu><mhz>2000</mhz><model>x86</model><active>{cpus}</active><max>{cpus}</max><nodes>1</nodes><sockets>1</sockets><cores>{cpus}</cores><threads>1</threads></cpu>\n  <memory>67108864</memory>\n  <pool type='dir'><name>labpool</name><uuid>35bb2ad9-388a-cdfe-461a-b8907f6e53fe</uuid><target><path>/fake/labpool</path></target>\n    <volume type='file'><name>base.qcow2</name><capacity unit='MiB'>64</capacity><target><path>/fake/labpool/base.qcow2</path><format type='qcow2'/></target></volume>\n  </pool>\n</node>\n"
    )
}

impl Lab {
    pub fn new() -> Lab {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("courses")).unwrap();
        Lab { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a test-driver node file and returns its `test:///` URI.
    pub fn test_host(&self, name: &str) -> String {
        let file = self.path().join(format!("{name}.xml"));
        std::fs::write(&file, test_node_xml(64)).unwrap();
        format!("test://{}", file.display())
    }

    /// Writes (or rewrites) a course file.
    pub fn course(&self, name: &str, image: &str, memory: &str, warm: u32, max: u32) {
        self.course_text(
            name,
            &format!(
                "name: {name}\ntitle: Test {name}\nimage: {image}\nvm: {{ vcpus: 1, memory: {memory} }}\npool: {{ warm: {warm}, max: {max} }}\nreadiness: {{ console_marker: GUEST-READY, timeout: 60s }}\n"
            ),
        );
    }

    pub fn course_text(&self, name: &str, text: &str) {
        std::fs::write(self.course_path(name), text).unwrap();
    }

    pub fn course_path(&self, name: &str) -> PathBuf {
        self.path().join("courses").join(format!("{name}.yaml"))
    }

    pub fn remove_course(&self, name: &str) {
        std::fs::remove_file(self.course_path(name)).unwrap();
    }

    /// Writes `labpool.yaml` from the given hosts/images YAML and returns
    /// the parsed configuration (database and folder inside the lab).
    pub fn config(&self, body: &str) -> Config {
        self.config_on("sqlite:labpool.db", body)
    }

    /// [`Lab::config`] with the store at `database`.
    pub fn config_on(&self, database: &str, body: &str) -> Config {
        let text = format!(
            "database: \"{database}\"\nsource: {{ folder: courses }}\nhttp: {{ listen: \"127.0.0.1:0\" }}\n{body}"
        );
        // A PostgreSQL store needs a secret key file (labpool generates
        // one only beside a SQLite file).
        let text = if database.starts_with("postgres") {
            let key = self.path().join("secret.key");
            // One key per lab: a second configuration opens the same store.
            if !key.exists() {
                write_private(
                    &key,
                    &format!("{}\n", hex::encode(rand::random::<[u8; 32]>())),
                );
            }
            format!("{text}secret_key_file: secret.key\n")
        } else {
            text
        };
        let file = self.path().join("labpool.yaml");
        // 0600: it may hold secrets, and `serve` refuses such a file when
        // others can read it.
        write_private(&file, &text);
        match Config::load(&file) {
            Ok(c) => c,
            Err(e) => panic!("test config invalid: {:#?}", e.diagnostics),
        }
    }

    pub async fn reconciler(&self, config: Config) -> Reconciler {
        let store = Store::open(config.database.expose()).await.expect("store");
        Reconciler::new(config, store).await.expect("reconciler")
    }
}

/// Runs passes (each followed by waiting for its actions) until `done`
/// holds for the store's VMs, or fails after `limit`.
pub async fn converge(
    r: &Reconciler,
    limit: Duration,
    what: &str,
    done: impl Fn(&[VmRow]) -> bool,
) -> Vec<VmRow> {
    let start = Instant::now();
    loop {
        r.pass().await.expect("pass");
        r.settle().await;
        let vms = r.store().vms().await.expect("vms");
        if done(&vms) {
            return vms;
        }
        if start.elapsed() > limit {
            let events = r.store().events(20).await.expect("events");
            panic!(
                "not converged within {limit:?}: {what}; VMs: {:#?}\nrecent events: {:#?}",
                vms.iter()
                    .map(|v| (&v.course, &v.host, v.state, &v.reason))
                    .collect::<Vec<_>>(),
                events
                    .iter()
                    .map(|e| format!("{} {:?} {}", e.kind, e.host, e.message))
                    .collect::<Vec<_>>()
            );
        }
        // A boot on a real host finishes in its own time: ask again soon.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn count(vms: &[VmRow], course: &str, state: VmState) -> usize {
    vms.iter()
        .filter(|v| v.course == course && v.state == state)
        .count()
}

pub fn on_host(vms: &[VmRow], host: &str) -> usize {
    vms.iter().filter(|v| v.host == host).count()
}

/// Writes `text` to `path` with mode 0600.
pub fn write_private(path: &std::path::Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// A revision removing every course is held until an admin confirms it
/// (issue 16): one pass holds it, then this confirms it as `labpool revision
/// confirm` does; the next pass applies it.
pub async fn confirm_removal(r: &Reconciler) {
    r.pass().await.expect("pass");
    r.settle().await;
    let held = r
        .store()
        .source_revision("held")
        .await
        .expect("store")
        .expect("a revision removing every course is held");
    labpool::admin::actions::confirm_revision(r.store(), &held.revision, "test")
        .await
        .expect("confirmed");
}
