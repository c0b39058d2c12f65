//! The seccomp filter, built in the supervisor and installed last in the child.
//!
//! `build` turns the policy's `syscalls` block into one classic BPF program.
//! The program is a chain of stages, each compiled by `seccompiler` with a
//! single action on match:
//!
//! 1. entry checks, written by hand: any architecture other than the native
//!    one (the i386 `int 0x80` entry on x86_64, the 32-bit compat entry on
//!    aarch64) kills the process, and x32 syscall numbers are denied;
//! 2. `clone3` returns ENOSYS, so libc falls back to `clone`, whose flags the
//!    filter can check (the flags of `clone3` sit in memory it cannot read);
//! 3. with `deny_inet`, `socket` of any family but AF_UNIX returns EAFNOSUPPORT;
//! 4. argument checks: `clone` with a `CLONE_NEW*` flag, and `ioctl` with
//!    TIOCSTI or TIOCLINUX compared on the low 32 bits of the request (the
//!    kernel ignores the upper half, so `TIOCSTI | 1 << 32` is still TIOCSTI);
//! 5. the profile: `default` denies a list of dangerous calls and allows the
//!    rest, `strict` allows a list of common calls and denies the rest.
//!
//! A stage that does not match falls through to the next one. Allowed calls
//! never load an argument, so the kernel's per-syscall action cache (Linux
//! 5.11 and later) allows them without running the filter.

mod table;

use std::collections::{BTreeMap, BTreeSet};

use nix::errno::Errno;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};
use thiserror::Error;

use crate::policy::{OnViolation, SyscallPolicy, SyscallProfile};

/// A filter that could not be built.
#[derive(Debug, Error)]
pub enum SeccompError {
    #[error(
        "unknown syscall name {name:?} in syscalls.{list}; use the kernel's name, such as `ptrace` or `io_uring_setup`"
    )]
    UnknownSyscall { name: String, list: &'static str },

    #[error("syscall {name:?} is listed in both syscalls.deny and syscalls.allow; keep one")]
    Conflict { name: String },

    #[error("syscalls.allow lists {name:?}, which cannot be allowed: {reason}")]
    NotAllowable { name: String, reason: &'static str },

    #[error(
        "seccomp filters are not supported on the {arch} architecture; safe-exec supports x86_64 and aarch64"
    )]
    UnsupportedArch { arch: &'static str },

    #[error("failed to compile the seccomp filter: {0}")]
    Compile(#[from] seccompiler::BackendError),

    #[error(
        "the seccomp filter has {len} instructions, more than the kernel's limit of {max}; shorten syscalls.deny or syscalls.allow"
    )]
    TooLarge { len: usize, max: usize },
}

/// The kernel's limit on the length of one BPF program (BPF_MAXINSNS).
const MAX_INSTRUCTIONS: usize = 4096;

/// Calls the default profile denies.
pub const DEFAULT_DENY: &[&str] = &[
    // Asynchronous I/O that bypasses seccomp for the operations it submits.
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    // Reading or changing other processes.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    // Kernel attack surface with a history of privilege escalations.
    "bpf",
    "perf_event_open",
    "userfaultfd",
    // The kernel keyring is shared by every process of the user.
    "keyctl",
    "add_key",
    "request_key",
    // Mounts and namespaces.
    "mount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "open_tree_attr",
    "mount_setattr",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "unshare",
    "setns",
    // The machine itself.
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
];

/// Calls the strict profile allows; everything else is denied.
#[rustfmt::skip]
pub const STRICT_ALLOW: &[&str] = &[
    // Files and directories.
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
    "pwritev2", "open", "openat", "openat2", "creat", "close", "close_range", "lseek", "stat",
    "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs", "access", "faccessat",
    "faccessat2", "readlink", "readlinkat", "getdents", "getdents64", "mkdir", "mkdirat", "rmdir",
    "unlink", "unlinkat", "rename", "renameat", "renameat2", "link", "linkat", "symlink",
    "symlinkat", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown",
    "fchownat", "truncate", "ftruncate", "fallocate", "fsync", "fdatasync", "sync_file_range",
    "flock", "fcntl", "dup", "dup2", "dup3", "pipe", "pipe2", "utime", "utimes", "utimensat",
    "futimesat", "umask", "chdir", "fchdir", "getcwd", "getxattr", "lgetxattr", "fgetxattr",
    "listxattr", "llistxattr", "flistxattr", "sendfile", "copy_file_range", "splice", "tee",
    "fadvise64", "readahead", "memfd_create", "inotify_init", "inotify_init1",
    "inotify_add_watch", "inotify_rm_watch", "ioctl",
    // Memory.
    "brk", "mmap", "munmap", "mprotect", "mremap", "madvise", "msync", "mincore", "membarrier",
    // Processes and threads.
    "execve", "execveat", "exit", "exit_group", "fork", "vfork", "clone", "wait4", "waitid",
    "kill", "tgkill", "tkill", "getpid", "getppid", "gettid", "getuid", "geteuid", "getgid",
    "getegid", "getresuid", "getresgid", "getgroups", "getpgid", "getpgrp", "setpgid", "getsid",
    "setsid", "prctl", "arch_prctl", "set_tid_address", "set_robust_list", "get_robust_list",
    "rseq", "futex", "futex_waitv", "sched_yield", "sched_getaffinity", "sched_setaffinity",
    "sched_getparam", "sched_getscheduler", "sched_get_priority_max", "sched_get_priority_min",
    "getpriority", "setpriority", "getrlimit", "setrlimit", "prlimit64", "getrusage", "uname",
    "sysinfo", "times", "getrandom", "capget", "pidfd_open", "pidfd_send_signal",
    // Signals.
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigsuspend", "rt_sigpending",
    "rt_sigtimedwait", "rt_sigqueueinfo", "sigaltstack", "pause", "alarm", "signalfd",
    "signalfd4",
    // Time.
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
    "timer_create", "timer_settime", "timer_gettime", "timer_getoverrun", "timer_delete",
    "timerfd_create", "timerfd_settime", "timerfd_gettime", "getitimer", "setitimer",
    // Waiting for events.
    "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2",
    // Sockets (the network itself is confined by the network namespace and Landlock).
    "socket", "socketpair", "bind", "listen", "accept", "accept4", "connect", "getsockname",
    "getpeername", "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg",
    "shutdown", "setsockopt", "getsockopt",
];

/// Flags of `clone` that create a namespace. CLONE_NEWTIME (0x80) is left
/// out because legacy `clone` reads those bits as the exit signal.
const CLONE_NEW_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// ioctl requests that push input into, or control, a terminal: TIOCSTI and
/// TIOCLINUX, which have these numbers on x86_64 and aarch64 alike.
const TERMINAL_INJECTION_IOCTLS: &[u64] = &[0x5412, 0x541C];

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;
/// Set in the syscall number of every call made through the x32 ABI.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// Offsets in `struct seccomp_data`.
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;

// Classic BPF opcodes, from linux/bpf_common.h: class | size or operation | source.
/// BPF_LD | BPF_W | BPF_ABS.
const BPF_LD_W_ABS: u16 = 0x20;
/// BPF_JMP | BPF_JEQ | BPF_K.
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
/// BPF_JMP | BPF_JGE | BPF_K.
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
/// BPF_JMP | BPF_JA.
const BPF_JMP_JA: u16 = 0x05;
/// BPF_RET | BPF_K.
const BPF_RET_K: u16 = 0x06;

/// The architecture this binary runs on, as seccompiler and the kernel name it.
struct NativeArch {
    target: TargetArch,
    audit: u32,
    table: &'static [(&'static str, i64)],
    /// The table of the other supported architecture, so a policy written for
    /// both can name calls that exist on only one of them.
    other_table: &'static [(&'static str, i64)],
}

fn native_arch() -> Result<NativeArch, SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(NativeArch {
            target: TargetArch::x86_64,
            audit: AUDIT_ARCH_X86_64,
            table: table::X86_64,
            other_table: table::AARCH64,
        })
    } else if cfg!(target_arch = "aarch64") {
        Ok(NativeArch {
            target: TargetArch::aarch64,
            audit: AUDIT_ARCH_AARCH64,
            table: table::AARCH64,
            other_table: table::X86_64,
        })
    } else {
        Err(SeccompError::UnsupportedArch {
            arch: std::env::consts::ARCH,
        })
    }
}

fn lookup(table: &[(&str, i64)], name: &str) -> Option<i64> {
    table
        .binary_search_by(|(entry, _)| (*entry).cmp(name))
        .ok()
        .map(|index| table[index].1)
}

/// Returns the x86_64 or aarch64 number of the syscall `name`, or `None` when unknown.
pub fn syscall_number(name: &str) -> Option<i64> {
    let arch = native_arch().ok()?;
    lookup(arch.table, name)
}

/// The calls each stage of the filter covers, resolved from the policy.
struct Plan {
    deny_action: SeccompAction,
    /// Calls denied without looking at their arguments.
    denied: BTreeSet<i64>,
    /// Calls allowed by the strict profile; unused by the default profile.
    allowed: BTreeSet<i64>,
    /// `clone3` returns ENOSYS.
    clone3_enosys: bool,
    /// `clone` with a namespace flag is denied.
    check_clone_flags: bool,
    /// `ioctl` with TIOCSTI or TIOCLINUX is denied.
    check_ioctl: bool,
}

impl Plan {
    fn new(policy: &SyscallPolicy, arch: &NativeArch) -> Result<Self, SeccompError> {
        let resolve = |names: &[String],
                       list: &'static str|
         -> Result<BTreeMap<String, Option<i64>>, SeccompError> {
            let mut resolved = BTreeMap::new();
            for name in names {
                let number = lookup(arch.table, name);
                if number.is_none() && lookup(arch.other_table, name).is_none() {
                    return Err(SeccompError::UnknownSyscall {
                        name: name.clone(),
                        list,
                    });
                }
                // A call that exists only on the other architecture needs no rule here.
                resolved.insert(name.clone(), number);
            }
            Ok(resolved)
        };
        let extra_deny = resolve(&policy.deny, "deny")?;
        let extra_allow = resolve(&policy.allow, "allow")?;

        if let Some(name) = extra_deny
            .keys()
            .find(|name| extra_allow.contains_key(*name))
        {
            return Err(SeccompError::Conflict { name: name.clone() });
        }
        if extra_allow.contains_key("ioctl") {
            return Err(SeccompError::NotAllowable {
                name: "ioctl".into(),
                reason: "every ioctl request is already allowed except TIOCSTI and TIOCLINUX, which push input into the caller's terminal",
            });
        }
        if extra_allow.contains_key("clone3")
            && !(extra_allow.contains_key("unshare") && extra_allow.contains_key("clone"))
        {
            return Err(SeccompError::NotAllowable {
                name: "clone3".into(),
                reason: "the filter cannot read clone3's flags, so allowing it allows namespace creation; allow clone and unshare as well to show that is intended",
            });
        }

        let deny_action = match policy.on_violation {
            OnViolation::Errno => SeccompAction::Errno(libc::EPERM as u32),
            OnViolation::Kill => SeccompAction::KillProcess,
        };

        let number_of = |name: &str| lookup(arch.table, name);
        let mut denied = BTreeSet::new();
        for name in DEFAULT_DENY {
            if !extra_allow.contains_key(*name) {
                denied.extend(number_of(name));
            }
        }
        denied.extend(extra_deny.values().flatten());

        let mut allowed = BTreeSet::new();
        if policy.profile == SyscallProfile::Strict {
            allowed.extend(STRICT_ALLOW.iter().filter_map(|name| number_of(name)));
            allowed.extend(extra_allow.values().flatten());
            allowed.retain(|number| !denied.contains(number));
        }

        Ok(Plan {
            deny_action,
            clone3_enosys: !extra_allow.contains_key("clone3")
                && !extra_deny.contains_key("clone3"),
            check_clone_flags: !extra_allow.contains_key("clone")
                && !extra_deny.contains_key("clone"),
            check_ioctl: !extra_deny.contains_key("ioctl"),
            denied,
            allowed,
        })
    }
}

/// Builds the filter for `policy`; `deny_inet` also denies sockets of every
/// family except AF_UNIX (used when no empty network namespace is available).
pub fn build(policy: &SyscallPolicy, deny_inet: bool) -> Result<BpfProgram, SeccompError> {
    let arch = native_arch()?;
    let plan = Plan::new(policy, &arch)?;
    let allow = SeccompAction::Allow;
    let mut stages: Vec<SeccompFilter> = Vec::new();

    if plan.clone3_enosys {
        let clone3 = number(&arch, "clone3")?;
        let rules = BTreeMap::from([(clone3, Vec::new())]);
        stages.push(SeccompFilter::new(
            rules,
            allow.clone(),
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch.target,
        )?);
    }

    if deny_inet {
        let socket = number(&arch, "socket")?;
        let not_unix = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Ne,
            libc::AF_UNIX as u64,
        )?;
        let rules = BTreeMap::from([(socket, vec![SeccompRule::new(vec![not_unix])?])]);
        stages.push(SeccompFilter::new(
            rules,
            allow.clone(),
            SeccompAction::Errno(libc::EAFNOSUPPORT as u32),
            arch.target,
        )?);
    }

    let mut argument_rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    if plan.check_clone_flags {
        argument_rules.insert(number(&arch, "clone")?, flag_rules(0, CLONE_NEW_FLAGS)?);
    }
    if plan.check_ioctl {
        argument_rules.insert(
            number(&arch, "ioctl")?,
            equal_rules(1, TERMINAL_INJECTION_IOCTLS)?,
        );
    }
    argument_rules.retain(|number, _| !plan.denied.contains(number));
    if !argument_rules.is_empty() {
        stages.push(SeccompFilter::new(
            argument_rules,
            allow.clone(),
            plan.deny_action.clone(),
            arch.target,
        )?);
    }

    let profile = match policy.profile {
        SyscallProfile::Default => {
            let rules = plan
                .denied
                .iter()
                .map(|number| (*number, Vec::new()))
                .collect();
            SeccompFilter::new(rules, allow, plan.deny_action.clone(), arch.target)?
        }
        SyscallProfile::Strict => {
            let rules = plan
                .allowed
                .iter()
                .map(|number| (*number, Vec::new()))
                .collect();
            SeccompFilter::new(rules, plan.deny_action.clone(), allow, arch.target)?
        }
    };
    stages.push(profile);

    let mut program = entry_checks(&arch, &plan.deny_action);
    chain(&mut program, stages)?;
    if program.len() > MAX_INSTRUCTIONS {
        return Err(SeccompError::TooLarge {
            len: program.len(),
            max: MAX_INSTRUCTIONS,
        });
    }
    Ok(program)
}

fn number(arch: &NativeArch, name: &'static str) -> Result<i64, SeccompError> {
    lookup(arch.table, name).ok_or(SeccompError::UnknownSyscall {
        name: name.into(),
        list: "built-in list",
    })
}

/// Builds one rule per flag, each matching when that flag is set in argument `index`.
fn flag_rules(index: u8, flags: &[u64]) -> Result<Vec<SeccompRule>, SeccompError> {
    let mut rules = Vec::new();
    for flag in flags {
        let condition = SeccompCondition::new(
            index,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(*flag),
            *flag,
        )?;
        rules.push(SeccompRule::new(vec![condition])?);
    }
    Ok(rules)
}

/// Builds one rule per value, each matching when the low 32 bits of argument `index` equal it.
fn equal_rules(index: u8, values: &[u64]) -> Result<Vec<SeccompRule>, SeccompError> {
    let mut rules = Vec::new();
    for value in values {
        let condition =
            SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *value)?;
        rules.push(SeccompRule::new(vec![condition])?);
    }
    Ok(rules)
}

fn statement(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Returns the hand-written start of the program. seccompiler checks only that
/// the architecture is the native one, and x32 calls arrive with the native
/// x86_64 architecture value, so the x32 check has to be added here.
fn entry_checks(arch: &NativeArch, deny_action: &SeccompAction) -> BpfProgram {
    let mut program = vec![
        // A call through another ABI (i386 `int 0x80`, arm32 compat) kills the process.
        statement(BPF_LD_W_ABS, SECCOMP_DATA_ARCH),
        jump(BPF_JMP_JEQ_K, arch.audit, 1, 0),
        statement(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
    ];
    if arch.audit == AUDIT_ARCH_X86_64 {
        program.extend([
            // x32 numbers have bit 30 set; every native number is below it.
            statement(BPF_LD_W_ABS, SECCOMP_DATA_NR),
            jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1),
            statement(BPF_RET_K, u32::from(deny_action.clone())),
        ]);
    }
    program
}

/// Appends the stages to `program`, each stage's "allow" turned into a jump to
/// the next stage so a call is allowed only when every stage allows it.
fn chain(program: &mut BpfProgram, stages: Vec<SeccompFilter>) -> Result<(), SeccompError> {
    let count = stages.len();
    for (position, stage) in stages.into_iter().enumerate() {
        let mut compiled = BpfProgram::try_from(stage)?;
        let is_last = position + 1 == count;
        if !is_last {
            let len = compiled.len();
            for (index, instruction) in compiled.iter_mut().enumerate() {
                if instruction.code == BPF_RET_K && instruction.k == libc::SECCOMP_RET_ALLOW {
                    // A forward jump to the first instruction after this stage.
                    let offset =
                        u32::try_from(len - index - 1).map_err(|_| SeccompError::TooLarge {
                            len,
                            max: MAX_INSTRUCTIONS,
                        })?;
                    *instruction = statement(BPF_JMP_JA, offset);
                }
            }
        }
        program.extend(compiled);
    }
    Ok(())
}

/// Installs `program` on the calling thread. Async-signal-safe: one syscall, no allocation.
///
/// The caller must have set `no_new_privs` (or hold CAP_SYS_ADMIN) first.
pub fn install(program: &BpfProgram) -> Result<(), Errno> {
    let Ok(len) = libc::c_ushort::try_from(program.len()) else {
        return Err(Errno::E2BIG);
    };
    let fprog = libc::sock_fprog {
        len,
        // `seccompiler::sock_filter` has the layout of the kernel's `struct sock_filter`.
        filter: program.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    // SAFETY: `fprog` points to `len` initialised instructions that outlive the
    // call; the kernel copies the program and keeps no pointer to it.
    let result = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
            0 as libc::c_ulong,
            &raw const fprog,
        )
    };
    if result != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(
        profile: SyscallProfile,
        deny: &[&str],
        allow: &[&str],
        on_violation: OnViolation,
    ) -> SyscallPolicy {
        SyscallPolicy {
            profile,
            deny: deny.iter().map(|name| name.to_string()).collect(),
            allow: allow.iter().map(|name| name.to_string()).collect(),
            on_violation,
        }
    }

    fn default_policy() -> SyscallPolicy {
        policy(SyscallProfile::Default, &[], &[], OnViolation::Errno)
    }

    #[test]
    fn tables_sorted_and_unique() {
        for table in [table::X86_64, table::AARCH64] {
            for pair in table.windows(2) {
                assert!(pair[0].0 < pair[1].0, "{} before {}", pair[0].0, pair[1].0);
            }
        }
    }

    #[test]
    fn table_numbers_match_libc() {
        assert_eq!(syscall_number("read"), Some(libc::SYS_read));
        assert_eq!(syscall_number("clone3"), Some(libc::SYS_clone3));
        assert_eq!(
            syscall_number("io_uring_setup"),
            Some(libc::SYS_io_uring_setup)
        );
        assert_eq!(syscall_number("ptrace"), Some(libc::SYS_ptrace));
        assert_eq!(syscall_number("ioctl"), Some(libc::SYS_ioctl));
        assert_eq!(syscall_number("no_such_call"), None);
        assert_eq!(lookup(table::AARCH64, "openat"), Some(56));
        assert_eq!(lookup(table::X86_64, "openat"), Some(257));
    }

    #[test]
    fn builtin_lists_known() {
        let arch = native_arch().unwrap();
        for name in DEFAULT_DENY.iter().chain(STRICT_ALLOW) {
            let known = lookup(arch.table, name).or(lookup(arch.other_table, name));
            assert!(known.is_some(), "{name} is in no table");
        }
    }

    #[test]
    fn build_default_starts_with_arch_check() {
        let program = build(&default_policy(), false).unwrap();
        assert_eq!(program[0].code, BPF_LD_W_ABS);
        assert_eq!(program[0].k, SECCOMP_DATA_ARCH);
        assert_eq!(program[2].k, libc::SECCOMP_RET_KILL_PROCESS);
        assert!(program.len() < MAX_INSTRUCTIONS);
    }

    #[test]
    fn build_rejects_unknown_name() {
        let err = build(
            &policy(
                SyscallProfile::Default,
                &["not_a_call"],
                &[],
                OnViolation::Errno,
            ),
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not_a_call"), "{err}");
    }

    #[test]
    fn build_rejects_conflict() {
        let err = build(
            &policy(
                SyscallProfile::Default,
                &["ptrace"],
                &["ptrace"],
                OnViolation::Errno,
            ),
            false,
        )
        .unwrap_err();
        assert!(matches!(err, SeccompError::Conflict { .. }), "{err}");
    }

    #[test]
    fn build_rejects_allow_ioctl() {
        let err = build(
            &policy(SyscallProfile::Default, &[], &["ioctl"], OnViolation::Errno),
            false,
        )
        .unwrap_err();
        assert!(matches!(err, SeccompError::NotAllowable { .. }), "{err}");
    }

    #[test]
    fn build_rejects_lone_clone3() {
        let err = build(
            &policy(
                SyscallProfile::Default,
                &[],
                &["clone3"],
                OnViolation::Errno,
            ),
            false,
        )
        .unwrap_err();
        assert!(matches!(err, SeccompError::NotAllowable { .. }), "{err}");
    }

    #[test]
    fn build_accepts_other_arch_name() {
        // `open` exists on x86_64 only, `renameat` on both; neither is an error anywhere.
        build(
            &policy(SyscallProfile::Default, &["open"], &[], OnViolation::Errno),
            false,
        )
        .unwrap();
    }

    #[test]
    fn build_strict_and_kill() {
        for profile in [SyscallProfile::Default, SyscallProfile::Strict] {
            let program = build(
                &policy(profile, &["chmod"], &["ptrace"], OnViolation::Kill),
                true,
            )
            .unwrap();
            let kills = program
                .iter()
                .filter(|i| i.code == BPF_RET_K && i.k == libc::SECCOMP_RET_KILL_PROCESS)
                .count();
            assert!(
                kills > 1,
                "{profile:?}: no kill action besides the architecture check"
            );
        }
    }

    #[test]
    fn chain_jumps_stay_inside_program() {
        let program = build(
            &policy(SyscallProfile::Strict, &[], &[], OnViolation::Errno),
            true,
        )
        .unwrap();
        for (index, instruction) in program.iter().enumerate() {
            if instruction.code == BPF_JMP_JA {
                assert!(
                    index + 1 + (instruction.k as usize) < program.len(),
                    "jump at {index} leaves the program"
                );
            }
        }
        let last = program.last().unwrap();
        assert_eq!(last.code, BPF_RET_K);
    }

    /// Runs `program` as the kernel's action cache does when it decides
    /// whether a call is always allowed (`seccomp_is_const_allow` in
    /// kernel/seccomp.c): only loads of the number and architecture are
    /// known, so any load of an argument returns `None`.
    fn constant_action(program: &BpfProgram, arch: u32, number: u32) -> Option<u32> {
        const BPF_JMP_JGT_K: u16 = 0x05 | 0x20;
        const BPF_JMP_JSET_K: u16 = 0x05 | 0x40;
        let mut accumulator = 0u32;
        let mut pc = 0usize;
        while let Some(instruction) = program.get(pc) {
            let k = instruction.k;
            match instruction.code {
                BPF_LD_W_ABS => match k {
                    SECCOMP_DATA_NR => accumulator = number,
                    SECCOMP_DATA_ARCH => accumulator = arch,
                    _ => return None,
                },
                BPF_RET_K => return Some(k),
                BPF_JMP_JA => pc += k as usize,
                BPF_JMP_JEQ_K | BPF_JMP_JGE_K | BPF_JMP_JGT_K | BPF_JMP_JSET_K => {
                    let jump_taken = match instruction.code {
                        BPF_JMP_JEQ_K => accumulator == k,
                        BPF_JMP_JGE_K => accumulator >= k,
                        BPF_JMP_JGT_K => accumulator > k,
                        _ => accumulator & k != 0,
                    };
                    pc += usize::from(if jump_taken {
                        instruction.jt
                    } else {
                        instruction.jf
                    });
                }
                _ => return None,
            }
            pc += 1;
        }
        None
    }

    #[test]
    fn common_calls_cacheable_as_allowed() {
        let arch = native_arch().unwrap();
        for profile in [SyscallProfile::Default, SyscallProfile::Strict] {
            let program = build(&policy(profile, &[], &[], OnViolation::Errno), true).unwrap();
            for name in [
                "read",
                "write",
                "openat",
                "close",
                "futex",
                "mmap",
                "getpid",
                "newfstatat",
            ] {
                let number = lookup(arch.table, name).unwrap() as u32;
                let action = constant_action(&program, arch.audit, number);
                assert_eq!(
                    action,
                    Some(libc::SECCOMP_RET_ALLOW),
                    "{profile:?}: {name} is not allowed without looking at its arguments"
                );
            }
        }
    }

    #[test]
    fn denied_calls_constant_errno() {
        let arch = native_arch().unwrap();
        let program = build(&default_policy(), false).unwrap();
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        for name in [
            "ptrace",
            "io_uring_setup",
            "bpf",
            "unshare",
            "mount",
            "keyctl",
        ] {
            let number = lookup(arch.table, name).unwrap() as u32;
            assert_eq!(
                constant_action(&program, arch.audit, number),
                Some(eperm),
                "{name}"
            );
        }
        let clone3 = lookup(arch.table, "clone3").unwrap() as u32;
        assert_eq!(constant_action(&program, arch.audit, clone3), Some(enosys));
        assert_eq!(
            constant_action(&program, 0x4000_0003, 20),
            Some(libc::SECCOMP_RET_KILL_PROCESS),
            "i386 getpid"
        );
        if arch.audit == AUDIT_ARCH_X86_64 {
            assert_eq!(
                constant_action(&program, arch.audit, X32_SYSCALL_BIT | 39),
                Some(eperm),
                "x32 getpid"
            );
        }
        // Calls with argument checks depend on their arguments, so the cache cannot decide them.
        for name in ["ioctl", "clone"] {
            let number = lookup(arch.table, name).unwrap() as u32;
            assert_eq!(
                constant_action(&program, arch.audit, number),
                None,
                "{name}"
            );
        }
    }
}
