//! The request channel between the sandboxed app and the supervisor.
//!
//! While the app runs, the supervisor serves JSON Lines requests on a Unix
//! socket in the run's private directory: take a rate-limit token, record an
//! app event, ask the e-mail guard. The decisions and the state stay in the
//! supervisor, outside the sandbox, so the app cannot bypass or reset them.
//! [`protocol`] defines the messages, [`server`] and [`handler`] the
//! supervisor's side, [`peer`] who may connect, and [`client`] the app's side
//! and `safe-exec client`.

pub mod client;
pub mod handler;
pub mod peer;
pub mod protocol;
pub mod server;

pub use peer::PeerCheck;
pub use server::{ChannelError, Server, ServerConfig, ServerLimits};
