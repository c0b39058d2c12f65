//! The request channel between the sandboxed app and the supervisor.
