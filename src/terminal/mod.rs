//! The browser terminal: one gateway inside labpool between each session's
//! page (xterm.js over a WebSocket) and its VM's console.

pub mod console;
pub mod container;
pub mod gateway;
pub mod page;
pub mod serial;
pub mod ssh;
