//! The store's rows as Rust types, and how they are read from `Any` rows.
//!
//! Rows derive `Serialize`: `labpool status` prints them as JSON.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

/// Where a VM is in its life. Stored as the lowercase name.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// Domain and volume being created on the host.
    Creating,
    /// Started, not yet proven ready.
    Booting,
    /// Ready and unassigned: what a claim takes.
    Warm,
    /// Claimed by a session.
    Assigned,
    /// Broke; kept for inspection until deleted.
    Failed,
    /// Being removed from the host.
    Deleting,
}

impl VmState {
    pub const ALL: [VmState; 6] = [
        VmState::Creating,
        VmState::Booting,
        VmState::Warm,
        VmState::Assigned,
        VmState::Failed,
        VmState::Deleting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Creating => "creating",
            VmState::Booting => "booting",
            VmState::Warm => "warm",
            VmState::Assigned => "assigned",
            VmState::Failed => "failed",
            VmState::Deleting => "deleting",
        }
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name the store does not know (a newer labpool wrote it, or a person).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown VM state `{0}`")]
pub struct UnknownVmState(pub String);

impl FromStr for VmState {
    type Err = UnknownVmState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VmState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownVmState(s.to_owned()))
    }
}

impl TryFrom<String> for VmState {
    type Error = UnknownVmState;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostRow {
    pub name: String,
    pub uri: String,
    pub up: bool,
    pub last_error: Option<String>,
    /// When `up` last flipped, or the host was first added.
    pub changed_at: i64,
    /// An admin drained it: no new VMs, warm ones move elsewhere.
    pub draining: bool,
}

// By hand: `up` and `draining` are stored as 0/1 (see the migrations), which sqlx's derive
// cannot turn into a bool.
impl FromRow<'_, AnyRow> for HostRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        Ok(HostRow {
            name: row.try_get("name")?,
            uri: row.try_get("uri")?,
            up: row.try_get::<i64, _>("up")? != 0,
            last_error: row.try_get("last_error")?,
            changed_at: row.try_get("changed_at")?,
            draining: row.try_get::<i64, _>("draining")? != 0,
        })
    }
}

/// A course as last applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct CourseRow {
    pub name: String,
    pub title: String,
    /// The course repository's revision it came from.
    pub revision: String,
    /// Hash of the VM-shaping part of the spec; VMs carry the hash they were
    /// built from, and a claim takes only VMs of the current one.
    pub spec_hash: String,
    pub spec_json: String,
    pub conditions_json: String,
    /// When the row was last written (applied, or its conditions set).
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow, JsonSchema)]
pub struct VmRow {
    pub id: String,
    pub course: String,
    pub host: String,
    /// libvirt domain name.
    pub domain: String,
    /// libvirt volume (the VM's overlay disk).
    pub volume: String,
    pub spec_hash: String,
    #[sqlx(try_from = "String")]
    pub state: VmState,
    pub vcpus: i64,
    /// Bytes.
    pub memory: i64,
    pub ssh_port: Option<i64>,
    pub created_at: i64,
    pub state_changed_at: i64,
    /// When the VM last became warm; claims take the oldest first.
    pub ready_at: Option<i64>,
    /// Why it is in its state (a failure, a deletion's cause); None if nothing to say.
    pub reason: Option<String>,
}

/// Who launched: one LTI launch context. A key has at most one live session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, FromRow)]
pub struct SessionKey {
    pub issuer: String,
    pub deployment_id: String,
    pub user_sub: String,
    pub context_id: String,
    pub resource_link_id: String,
}

impl SessionKey {
    /// The key as one string, unambiguous (a JSON array): a lock name.
    pub fn lock_name(&self) -> String {
        serde_json::to_string(&[
            &self.issuer,
            &self.deployment_id,
            &self.user_sub,
            &self.context_id,
            &self.resource_link_id,
        ])
        .expect("strings serialize")
    }

    /// The user (issuer and `sub`) as a lock name: what per-user limits
    /// count under. It never equals a key's [`lock_name`](Self::lock_name)
    /// (three strings, not five).
    pub fn user_lock_name(&self) -> String {
        serde_json::to_string(&["user", &self.issuer, &self.user_sub]).expect("strings serialize")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct SessionRow {
    pub id: String,
    pub vm_id: String,
    pub course: String,
    #[sqlx(flatten)]
    pub key: SessionKey,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_activity_at: i64,
    /// None while the session is live.
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
}

/// What [`Store::claim`](super::Store::claim) hands out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claimed {
    pub session: SessionRow,
    pub vm: VmRow,
    /// The key already had a live session, returned unchanged.
    pub resumed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewEvent {
    pub at: i64,
    /// A short machine-readable word, e.g. `vm-failed`, `host-down`.
    pub kind: String,
    pub course: Option<String>,
    pub host: Option<String>,
    pub vm: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow, JsonSchema)]
pub struct EventRow {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub course: Option<String>,
    pub host: Option<String>,
    pub vm: Option<String>,
    pub message: String,
}
