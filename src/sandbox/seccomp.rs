//! The seccomp filter, built in the supervisor and installed last in the child.

use nix::errno::Errno;
use seccompiler::BpfProgram;
use thiserror::Error;

use crate::policy::SyscallPolicy;

/// A filter that could not be built.
#[derive(Debug, Error)]
pub enum SeccompError {
    #[error("failed to build the seccomp filter: {0}")]
    Build(String),
}

/// Returns the x86_64 or aarch64 number of the syscall `name`, or `None` when unknown.
pub fn syscall_number(name: &str) -> Option<i64> {
    let _ = name;
    todo!("syscall table")
}

/// Builds the filter for `policy`; `deny_inet` also denies sockets of every
/// family except AF_UNIX (used when no empty network namespace is available).
pub fn build(policy: &SyscallPolicy, deny_inet: bool) -> Result<BpfProgram, SeccompError> {
    let _ = (policy, deny_inet);
    todo!("seccomp filter")
}

/// Installs `program` on the calling thread. Async-signal-safe: one syscall, no allocation.
pub fn install(program: &BpfProgram) -> Result<(), Errno> {
    let _ = program;
    todo!("install")
}
