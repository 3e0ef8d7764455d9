//! labpool: pools of pre-warmed lab VMs on libvirt hosts, driven by course
//! files in Git, handed to students launching from their LMS.
//!
//! See ARCHITECTURE.md for the map of this crate and its invariants.

pub mod admin;
pub mod cli;
pub mod config;
pub mod course;
pub mod diagnostic;
pub mod file_modes;
pub mod hosts;
pub mod html;
pub mod http;
pub mod lms;
pub mod lti;
pub mod metrics;
pub mod ops;
pub mod reconcile;
pub mod secret_key;
pub mod session_token;
pub mod source;
pub mod store;
pub mod terminal;
pub mod yaml;
