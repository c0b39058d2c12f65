//! The supervisor: starts the sandboxed child and serves it until it exits.
