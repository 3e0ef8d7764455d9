//! Integration tests: the `labpool` binary run as users and CI run it, the
//! store on SQLite and PostgreSQL, and the reconciler on real libvirt (test
//! driver hosts and TCG guests on `qemu:///system`).
//!
//! One test binary (faster to link than one per file); modules by subject.

mod admin;
mod browser;
mod cli;
mod containers;
mod corpus;
mod diff;
mod docs;
mod lab;
mod listener;
mod lms;
mod logins;
mod lti;
mod metrics;
mod ownership;
mod qemu;
mod reconcile;
mod registration;
mod revisions;
mod schema;
mod secrets;
mod source_git;
mod store;
mod support;
mod terminal;
mod terminal_ssh;
mod tryit;
