//! The one shape every way into a VM takes: bytes out, input and resizes in.
//!
//! A backend (the serial console through libvirt, an SSH login) is opened
//! into a [`Console`] and pumps on tasks or threads of its own; the gateway
//! only moves bytes. The output channel closing means the console ended: the
//! VM was destroyed or restarted, the host or the guest's SSH dropped.

use tokio::sync::mpsc;

/// Output chunks waiting for the gateway. Small: a console that outruns the
/// gateway waits (the serial line and SSH both have flow control).
pub const OUTPUT_BUFFER: usize = 64;

/// What the gateway sends to a console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleInput {
    /// Keystrokes and pastes, as the terminal encodes them.
    Data(Vec<u8>),
    /// The page's terminal size in character cells.
    Resize { cols: u16, rows: u16 },
}

/// An open console.
#[derive(Debug)]
pub struct Console {
    pub input: mpsc::Sender<ConsoleInput>,
    /// Closed when the console ends.
    pub output: mpsc::Receiver<Vec<u8>>,
}

/// Why a console could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Host(#[from] crate::hosts::HostError),
    #[error("ssh to {addr}: {message}")]
    Ssh { addr: String, message: String },
    #[error("{0}")]
    Other(String),
}
