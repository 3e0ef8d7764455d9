//! Operating labpool: who may (admin API tokens), what is going on (the
//! overview every operator view shows), and what an admin may do. No HTTP
//! types here: `http::admin` (JSON API) and `http::dashboard` (HTML) are two
//! faces of this module.

pub mod actions;
pub mod overview;
pub mod tokens;

pub use actions::{ActionError, Admin};
pub use tokens::{Principal, Scope};
