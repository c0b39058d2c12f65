//! Probes of kernel support for the sandbox layers: Landlock ABI, seccomp,
//! user namespaces and cgroups.

use serde::Serialize;

use super::sys;

/// Directories the `filesystem.system` preset grants read and execute on.
pub use super::landlock::SYSTEM_EXEC as SYSTEM_EXEC_DIRS;

/// Returns the Landlock ABI version, or 0 when Landlock is unavailable or disabled.
pub fn landlock_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag the
    // call only returns the ABI version; no memory is read or written.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if abi < 0 { 0 } else { abi as i32 }
}

/// Returns true when seccomp filters can be installed. `SECCOMP_GET_ACTION_AVAIL`
/// for the allow action succeeds only with filter support
/// (CONFIG_SECCOMP_FILTER, Linux 4.14 and later).
pub fn seccomp_available() -> bool {
    const SECCOMP_GET_ACTION_AVAIL: libc::c_long = 2;
    let action: u32 = libc::SECCOMP_RET_ALLOW;
    // SAFETY: the kernel reads one u32 from the pointer, which refers to a live local.
    let result = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_GET_ACTION_AVAIL,
            0 as libc::c_long,
            &action as *const u32,
        )
    };
    result == 0
}

/// User namespace support of this host for the calling user.
#[derive(Debug, Clone, Serialize)]
pub struct UserNamespaces {
    /// A user namespace could be created by this process.
    pub available: bool,
    /// The reason, when unavailable.
    pub reason: Option<String>,
}

/// Creates a user namespace in a short-lived child to see whether this caller may.
pub fn probe_user_namespaces() -> UserNamespaces {
    match sys::clone_process(libc::CLONE_NEWUSER | libc::CLONE_NEWPID) {
        Ok(0) => sys::exit_now(0),
        Ok(pid) => {
            let mut status = 0;
            // SAFETY: the status pointer refers to a live local.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            UserNamespaces {
                available: true,
                reason: None,
            }
        }
        Err(errno) => {
            let sysctl = std::fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone").ok();
            let reason = match sysctl.as_deref().map(str::trim) {
                Some("0") => format!("{errno}: kernel.unprivileged_userns_clone is 0"),
                _ => format!(
                    "{errno}: user namespaces are disabled or restricted (sysctl, AppArmor or container)"
                ),
            };
            UserNamespaces {
                available: false,
                reason: Some(reason),
            }
        }
    }
}

/// Returns the cgroup version mounted at /sys/fs/cgroup: "v2", "v1 (hybrid)", "v1" or "none".
pub fn cgroup_version() -> &'static str {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2"
    } else if std::path::Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        "v1 (hybrid, v2 at /sys/fs/cgroup/unified)"
    } else if std::path::Path::new("/sys/fs/cgroup").is_dir() {
        "v1"
    } else {
        "none"
    }
}
