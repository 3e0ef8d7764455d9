//! Following a Git remote: a local bare mirror, fetched on demand, and the
//! commit the configured branch, tag or pinned commit points at.
//!
//! Host keys of ssh remotes are checked against the configured known_hosts
//! file (plain host names; hashed entries are not supported); https uses
//! libgit2's own TLS verification.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::config::{GitSourceConfig, GitTarget};

/// A fetch failed; the last good revision stays in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fetching {url}: {message}")]
pub struct FetchError {
    pub url: String,
    pub message: String,
    /// The pinned tag was moved on the remote (and is not followed).
    pub moved_tag: bool,
}

/// What a fetch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The commit the source follows.
    pub commit: String,
    /// The pinned tag was moved on the remote and `follow_moved_tags` let
    /// labpool follow it: from which commit.
    pub tag_moved_from: Option<String>,
}

/// Where the mirror keeps the commit a pinned tag named when labpool first
/// fetched it (the remote's tags are fetched with force, so `refs/tags/*`
/// alone would follow a moved tag).
fn pin_ref(tag: &str) -> String {
    format!("refs/labpool/pinned-tags/{tag}")
}

/// The local mirror of one remote.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub path: PathBuf,
    config: GitSourceConfig,
}

impl Mirror {
    /// The mirror for `config`, under its cache folder, named after the URL.
    pub fn new(config: &GitSourceConfig) -> Mirror {
        let digest = Sha256::digest(config.url.as_bytes());
        let path = config
            .cache
            .join(format!("{}.git", &hex::encode(digest)[..16]));
        Mirror {
            path,
            config: config.clone(),
        }
    }

    fn fail(&self, message: impl Into<String>) -> FetchError {
        FetchError {
            url: self.config.url.clone(),
            message: message.into(),
            moved_tag: false,
        }
    }

    /// Fetches every branch and tag, then returns the commit the source
    /// follows. A pinned tag stays on the commit it named at its first fetch
    /// unless `follow_moved_tags`: a moved tag is an error naming both
    /// commits. Blocks (network): run it on the blocking pool.
    pub fn fetch(&self) -> Result<Fetched, FetchError> {
        let repo = match git2::Repository::open_bare(&self.path) {
            Ok(r) => r,
            Err(_) => {
                // 0700: the mirror is labpool's cache, no one else's to read.
                crate::file_modes::create_private_dir(&self.path)
                    .map_err(|e| self.fail(e.to_string()))?;
                git2::Repository::init_bare(&self.path).map_err(|e| self.fail(e.message()))?
            }
        };
        let mut callbacks = git2::RemoteCallbacks::new();
        let key = self.config.ssh_key.clone();
        callbacks.credentials(move |_url, user, allowed| match &key {
            Some(key) if allowed.contains(git2::CredentialType::SSH_KEY) => {
                git2::Cred::ssh_key(user.unwrap_or("git"), None, key, None)
            }
            _ => git2::Cred::default(),
        });
        let known_hosts = self.config.known_hosts.clone();
        callbacks.certificate_check(move |cert, host| {
            let Some(hostkey) = cert.as_hostkey() else {
                // TLS: libgit2 has verified it already.
                return Ok(git2::CertificateCheckStatus::CertificatePassthrough);
            };
            // libgit2 replaces this error's text with its own ("invalid or
            // unknown remote ssh hostkey"): the reason goes to the log.
            let Some(file) = &known_hosts else {
                tracing::warn!(host, "ssh remote refused: no `known_hosts` configured to verify its host key");
                return Err(git2::Error::from_str(
                    "ssh remote without `known_hosts`: refusing an unverified host key",
                ));
            };
            let key = hostkey.hostkey().unwrap_or_default();
            if known_host(file, host, key) {
                Ok(git2::CertificateCheckStatus::CertificateOk)
            } else {
                tracing::warn!(host, known_hosts = %file.display(), "ssh remote refused: its host key is not in known_hosts");
                Err(git2::Error::from_str(&format!(
                    "the host key of {host} is not in {}",
                    file.display()
                )))
            }
        });
        let mut options = git2::FetchOptions::new();
        options.remote_callbacks(callbacks);
        options.download_tags(git2::AutotagOption::All);
        let mut remote = repo
            .remote_anonymous(&self.config.url)
            .map_err(|e| self.fail(e.message()))?;
        remote
            .fetch(
                &[
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ],
                Some(&mut options),
                None,
            )
            .map_err(|e| self.fail(e.message()))?;
        let spec = match self.config.target() {
            GitTarget::Branch(b) => format!("refs/remotes/origin/{b}"),
            GitTarget::Tag(t) => format!("refs/tags/{t}"),
            GitTarget::Commit(c) => c.to_string(),
        };
        let commit = repo
            .revparse_single(&spec)
            .and_then(|o| o.peel_to_commit())
            .map_err(|e| self.fail(format!("`{spec}`: {}", e.message())))?;
        let mut fetched = Fetched {
            commit: commit.id().to_string(),
            tag_moved_from: None,
        };
        if let GitTarget::Tag(tag) = self.config.target() {
            let pin = pin_ref(tag);
            let pinned = repo
                .find_reference(&pin)
                .ok()
                .and_then(|r| r.target())
                .map(|id| id.to_string());
            match pinned {
                Some(old) if old != fetched.commit => {
                    if !self.config.follow_moved_tags {
                        return Err(FetchError {
                            moved_tag: true,
                            ..self.fail(format!(
                                "tag `{tag}` was moved on the remote from {old} to {}: labpool stays on {old} (set source.git.follow_moved_tags: true to follow moved tags)",
                                fetched.commit
                            ))
                        });
                    }
                    fetched.tag_moved_from = Some(old);
                }
                Some(_) => return Ok(fetched),
                None => {}
            }
            repo.reference(&pin, commit.id(), true, "labpool: the commit the tag names")
                .map_err(|e| self.fail(e.message()))?;
        }
        Ok(fetched)
    }
}

/// Is `key` (raw ssh wire format) listed for `host` in the known_hosts file?
fn known_host(file: &std::path::Path, host: &str, key: &[u8]) -> bool {
    use base64::Engine as _;
    let Ok(text) = std::fs::read_to_string(file) else {
        return false;
    };
    // known_hosts writes keys in standard base64 with padding.
    let wanted = base64::engine::general_purpose::STANDARD.encode(key);
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .any(|line| {
            let mut fields = line.split_whitespace();
            let (Some(hosts), Some(_kind), Some(blob)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return false;
            };
            let host_matches = hosts.split(',').any(|h| {
                h == host
                    || h.strip_prefix('[')
                        .and_then(|r| r.split_once("]:"))
                        .is_some_and(|(n, _)| n == host)
            });
            host_matches && blob == wanted
        })
}
