//! A small but real LTI 1.3 platform (the LMS side, what Canvas or Moodle
//! do), and a scripted browser to drive it.
//!
//! labpool is an LTI *tool*; this module is its counterpart, used by the
//! integration tests, the launch benchmark and the `--dev` try-it page. It
//! follows IMS LTI Core 1.3, Security Framework 1.0, Dynamic Registration 1.0
//! and Deep Linking 2.0 to the letter, because it is what proves the tool
//! right: it refuses what a strict platform refuses (wrong redirect URI,
//! unknown client, bad deep-linking JWT) and, through [`Forgery`], produces
//! the bad tokens a tool must refuse.
//!
//! - [`Platform`]: an axum server on `127.0.0.1:0` with `/jwks`,
//!   `/.well-known/openid-configuration`, `/register`, `/authorize`,
//!   `/token` and `/deep-link/return`, and the actions an LMS admin or user
//!   takes (register a tool, click Launch, run a dynamic registration).
//!   [`Platform::mounted`] makes one without a server of its own, whose
//!   [`Platform::router`] another server nests (labpool's `/dev/lms`).
//! - [`Browser`]: a user agent with browser cookie rules (`SameSite`,
//!   `Secure` kept on loopback) that follows redirects and auto-submitting
//!   forms.
//! - [`Launch`]: one launch; [`Forgery`]: how to spoil its id_token.
//!
//! Auto-submitting forms are recognised by a `data-autosubmit` attribute on
//! the `<form>`; pages meant to post themselves (the tool's deep-linking
//! response) must carry it for [`Browser`] to follow them.

mod browser;
mod forms;
mod keys;
mod launch;
mod registration;
mod server;

pub use browser::{Browser, CookieSeen, Followed, Page};
pub use forms::{Form, escape_html, parse_forms, unescape_html};
pub use keys::SigningKey;
pub use launch::{
    Forgery, LTI, LTI_DL, Launch, MessageKind, PLATFORM_NAME, PRODUCT_FAMILY_CODE, ROLE_INSTRUCTOR,
    ROLE_LEARNER,
};
pub use registration::{PLATFORM_CONFIGURATION, TOOL_CONFIGURATION};
pub use server::{ConfigurationRequest, IssuedToken, Platform, RegisteredTool, ToolRegistration};
