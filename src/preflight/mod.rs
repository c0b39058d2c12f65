//! Preflight checks: named checks run before a run starts, each passing,
//! warning or failing with a message that says what to do.

pub mod import;
pub mod render;
