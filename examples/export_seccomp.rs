//! Writes the seccomp filter that safe-exec installs for a policy with the
//! default `syscalls` block to stdout, as the raw `struct sock_filter` array
//! that `bwrap --seccomp FD` reads. `scripts/bench` uses it so that bwrap runs
//! under the same filter as safe-exec.
//!
//! `--deny-inet` adds the socket-family rule used when no empty network
//! namespace is available.

use std::io::Write;
use std::process::ExitCode;

use safe_exec::policy::{OnViolation, SyscallPolicy, SyscallProfile};
use safe_exec::sandbox::seccomp;

fn main() -> ExitCode {
    let deny_inet = std::env::args().skip(1).any(|arg| arg == "--deny-inet");
    let policy = SyscallPolicy {
        profile: SyscallProfile::Default,
        deny: Vec::new(),
        allow: Vec::new(),
        on_violation: OnViolation::Errno,
    };
    let program = match seccomp::build(&policy, deny_inet) {
        Ok(program) => program,
        Err(err) => {
            eprintln!("export_seccomp: {err}");
            return ExitCode::FAILURE;
        }
    };

    // The kernel's layout: u16 code, u8 jt, u8 jf, u32 k, in native byte order.
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for instruction in &program {
        bytes.extend_from_slice(&instruction.code.to_ne_bytes());
        bytes.push(instruction.jt);
        bytes.push(instruction.jf);
        bytes.extend_from_slice(&instruction.k.to_ne_bytes());
    }
    if let Err(err) = std::io::stdout().lock().write_all(&bytes) {
        eprintln!("export_seccomp: failed to write the filter: {err}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
