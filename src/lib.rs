//! `safe-exec`: a sandboxing process supervisor for personal automation apps
//! and AI coding agents on Linux.
//!
//! The run pipeline reads top-down:
//!
//! 1. [`policy`] reads `policies/<app>.yaml` into a raw form and resolves it
//!    into a [`policy::Policy`] (paths canonicalised, defaults filled).
//! 2. [`preflight`] runs named checks (kernel support, permissions, paths,
//!    plaintext secrets, credentials) and decides whether the run may start.
//! 3. [`supervisor`] prepares the run (private directory, credential pipe,
//!    request socket), starts the child and serves it until it exits.
//! 4. [`sandbox`] holds the child's set-up steps, applied in a fixed order
//!    between fork and exec: session, terminal, limits, descriptors,
//!    environment, capabilities, `no_new_privs`, Landlock, seccomp last.
//! 5. [`audit`] records every step in a hash-chained log per app.
//!
//! [`vault`] stores the encrypted credentials, [`ratelimit`] the token
//! buckets and [`guard`] the e-mail guard; [`channel`] is the request
//! protocol between the sandboxed app and the supervisor.

pub mod audit;
pub mod channel;
pub mod cli;
pub mod commands;
pub mod context;
pub mod exit;
pub mod guard;
pub mod lockfile;
pub mod policy;
pub mod preflight;
pub mod ratelimit;
pub mod sandbox;
pub mod supervisor;
pub mod vault;
