//! Landlock rules, prepared in the supervisor and enforced in the child.
//!
//! `prepare` runs in the supervisor: it opens every granted path with O_PATH,
//! builds the ruleset at the best ABI the kernel offers (up to the rights of
//! ABI 6) and reports what this kernel cannot enforce. `restrict_self` runs in
//! the child between fork and exec and is a single `landlock_restrict_self`
//! call on the prepared ruleset descriptor.
//!
//! Rights per grant: `read` is read file and read dir. `write` adds write
//! file, make and remove of every kind, REFER (rename and link across
//! directories), TRUNCATE and IOCTL_DEV. `exec` adds EXECUTE. A rule on a
//! file keeps only the rights that apply to files. EXECUTE comes only from `exec` rules
//! and the system preset.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use landlock::Access as _;
use landlock::{
    ABI, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    PathFdError, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetError, Scope,
};
use nix::errno::Errno;
use serde::Serialize;
use thiserror::Error;

use super::Enforced;
use crate::policy::{Access, NetworkMode, NetworkPolicy, PathRule, RuleTarget};

/// A ruleset that could not be prepared.
#[derive(Debug, Error)]
pub enum LandlockError {
    #[error("failed to open {path} for its Landlock rule: {source}")]
    Open { path: PathBuf, source: PathFdError },

    #[error("failed to read the type of {path} for its Landlock rule: {source}")]
    Stat { path: PathBuf, source: Errno },

    #[error("failed to prepare the Landlock ruleset: {0}")]
    Ruleset(#[from] RulesetError),
}

/// The inputs of a ruleset.
#[derive(Debug)]
pub struct LandlockRequest<'a> {
    /// Resolved rules whose paths exist (missing ones are already skipped or rejected).
    pub rules: &'a [PathRule],
    /// Grant the system preset.
    pub system: bool,
    /// The run's private temporary directory, the target of `{tmp}` rules.
    pub run_tmp: &'a Path,
    pub network: &'a NetworkPolicy,
}

/// A ruleset ready to be enforced in the child, with what it covers.
#[derive(Debug)]
pub struct PreparedRuleset {
    pub enforced: Enforced,
    /// The Landlock ABI version of the running kernel; 0 when Landlock is unavailable.
    pub abi: i32,
    /// Every path rule in the ruleset, in the order added.
    pub grants: Vec<Grant>,
    /// The ruleset descriptor (close-on-exec); `None` when the kernel has no Landlock.
    ruleset: Option<OwnedFd>,
}

/// One path rule of a prepared ruleset, for the run plan and the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct Grant {
    pub path: PathBuf,
    /// Rights as a label such as `read+write`.
    pub rights: String,
    /// True for the rules of the system preset.
    pub system: bool,
}

/// The Landlock ABI whose rights this ruleset handles. Rights added by later
/// ABIs (such as RESOLVE_UNIX) stay unrestricted.
const HANDLED_ABI: ABI = ABI::V6;

/// Directories granted read and execute by the system preset.
pub const SYSTEM_EXEC: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64"];

/// Paths granted read only by the system preset.
const SYSTEM_READ: &[&str] = &["/etc", "/proc", "/sys/devices/system/cpu"];

/// Devices granted read and write by the system preset, so shells, `stty <
/// /dev/tty` and pseudo-terminal allocation (`/dev/ptmx`, `/dev/pts`) work.
const SYSTEM_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts",
];

const READ: Access = Access {
    read: true,
    write: false,
    exec: false,
};
const READ_WRITE: Access = Access {
    read: true,
    write: true,
    exec: false,
};
const READ_EXEC: Access = Access {
    read: true,
    write: false,
    exec: true,
};

/// Returns the Landlock rights for `access` on a directory.
fn directory_rights(access: Access) -> BitFlags<AccessFs> {
    let mut rights = BitFlags::empty();
    if access.read || access.write || access.exec {
        rights |= AccessFs::ReadFile | AccessFs::ReadDir;
    }
    if access.write {
        rights |= AccessFs::WriteFile
            | AccessFs::MakeChar
            | AccessFs::MakeDir
            | AccessFs::MakeReg
            | AccessFs::MakeSock
            | AccessFs::MakeFifo
            | AccessFs::MakeBlock
            | AccessFs::MakeSym
            | AccessFs::RemoveDir
            | AccessFs::RemoveFile
            | AccessFs::Refer
            | AccessFs::Truncate
            | AccessFs::IoctlDev;
    }
    if access.exec {
        rights |= AccessFs::Execute;
    }
    rights
}

/// Returns the Landlock rights for `access` on a path that is a directory or a file.
fn rights_for(access: Access, is_dir: bool) -> BitFlags<AccessFs> {
    let rights = directory_rights(access);
    if is_dir {
        rights
    } else {
        rights & AccessFs::from_file(HANDLED_ABI)
    }
}

/// Returns the Landlock ABI version of the running kernel, or 0 without Landlock.
pub fn kernel_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag the
    // kernel reads no memory and returns the ABI version or an error.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0 as libc::size_t,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    i32::try_from(version).unwrap_or(0).max(0)
}

/// Lists what a kernel with Landlock `abi` cannot enforce of `request`.
fn missing_features(abi: i32, request: &LandlockRequest<'_>) -> Enforced {
    if abi < 1 {
        return Enforced::None(
            "Landlock is not available: the kernel is older than 5.13, built without it, or it is not in the lsm= boot list"
                .into(),
        );
    }

    let mut missing = Vec::new();
    let any_write = request.rules.iter().any(|rule| rule.access.write);
    if abi < 2 && any_write {
        missing.push("Landlock REFER (ABI 2, Linux 5.19): moving or linking files between directories fails with EXDEV".into());
    }
    if abi < 3 {
        missing.push(
            "Landlock TRUNCATE (ABI 3, Linux 6.2): files outside the write grants can be truncated"
                .into(),
        );
    }
    let wants_tcp_rules =
        request.network.mode == NetworkMode::Open && !request.network.tcp_connect.is_empty();
    if abi < 4 && wants_tcp_rules {
        missing.push(
            "Landlock TCP rules (ABI 4, Linux 6.7): network.tcp_connect is not enforced".into(),
        );
    }
    if abi < 5 {
        missing.push(
            "Landlock IOCTL_DEV (ABI 5, Linux 6.10): ioctl on device files is not restricted"
                .into(),
        );
    }
    if abi < 6 {
        missing.push(
            "Landlock scopes (ABI 6, Linux 6.12): abstract Unix sockets and signals outside the sandbox are reachable"
                .into(),
        );
    }

    if missing.is_empty() {
        Enforced::Full
    } else {
        Enforced::Partial(missing)
    }
}

/// A path to grant, before it is opened.
struct PendingRule {
    path: PathBuf,
    access: Access,
    system: bool,
}

fn system_preset() -> Vec<PendingRule> {
    let sets: [(&[&str], Access); 3] = [
        (SYSTEM_EXEC, READ_EXEC),
        (SYSTEM_READ, READ),
        (SYSTEM_DEVICES, READ_WRITE),
    ];
    let mut pending = Vec::new();
    for (paths, access) in sets {
        for path in paths {
            // Preset paths missing on this host (such as /lib32) are left out.
            if Path::new(path).exists() {
                pending.push(PendingRule {
                    path: PathBuf::from(path),
                    access,
                    system: true,
                });
            }
        }
    }
    pending
}

/// Opens every path and builds the ruleset for `request`.
pub fn prepare(request: &LandlockRequest<'_>) -> Result<PreparedRuleset, LandlockError> {
    let abi = kernel_abi();
    let enforced = missing_features(abi, request);

    let mut pending = if request.system {
        system_preset()
    } else {
        Vec::new()
    };
    for rule in request.rules {
        let path = match &rule.target {
            RuleTarget::Path { path, .. } => path.clone(),
            RuleTarget::RunTmp => request.run_tmp.to_path_buf(),
        };
        pending.push(PendingRule {
            path,
            access: rule.access,
            system: false,
        });
    }

    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(HANDLED_ABI))?;
    let network = request.network;
    let handle_tcp = match network.mode {
        NetworkMode::None | NetworkMode::Proxy => true,
        NetworkMode::Open => !network.tcp_connect.is_empty(),
    };
    if handle_tcp {
        // Binding is handled (and so denied) too, so the app cannot serve on a port either.
        ruleset = ruleset.handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)?;
    }
    ruleset = ruleset.scope(Scope::AbstractUnixSocket | Scope::Signal)?;
    let mut created = ruleset.create()?;

    let mut grants = Vec::with_capacity(pending.len());
    for rule in pending {
        let fd = PathFd::new(&rule.path).map_err(|source| LandlockError::Open {
            path: rule.path.clone(),
            source,
        })?;
        let stat = nix::sys::stat::fstat(fd.as_fd()).map_err(|source| LandlockError::Stat {
            path: rule.path.clone(),
            source,
        })?;
        let is_dir = (stat.st_mode & libc::S_IFMT) == libc::S_IFDIR;
        created = created.add_rule(PathBeneath::new(fd, rights_for(rule.access, is_dir)))?;
        grants.push(Grant {
            path: rule.path,
            rights: rule.access.label(),
            system: rule.system,
        });
    }

    if network.mode == NetworkMode::Open {
        for port in &network.tcp_connect {
            created = created.add_rule(NetPort::new(*port, AccessNet::ConnectTcp))?;
        }
    }

    let ruleset: Option<OwnedFd> = created.into();
    Ok(PreparedRuleset {
        enforced,
        abi,
        grants,
        ruleset,
    })
}

impl PreparedRuleset {
    /// Returns the ruleset descriptor, which the child's descriptor cleanup
    /// must keep open until `restrict_self` has run. It is close-on-exec.
    pub fn ruleset_fd(&self) -> Option<BorrowedFd<'_>> {
        self.ruleset.as_ref().map(AsFd::as_fd)
    }

    /// Moves the ruleset descriptor to `min` or above, so the child's
    /// descriptor step (which places descriptors from 3 up) cannot replace it.
    pub fn raise_descriptor(&mut self, min: RawFd) -> Result<(), Errno> {
        let Some(ruleset) = &self.ruleset else {
            return Ok(());
        };
        // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor, owned from here on by the OwnedFd below.
        let raised =
            Errno::result(unsafe { libc::fcntl(ruleset.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) })?;
        // SAFETY: `raised` is a fresh descriptor that nothing else owns.
        self.ruleset = Some(unsafe { OwnedFd::from_raw_fd(raised) });
        Ok(())
    }

    /// Enforces the ruleset on the calling thread. Async-signal-safe.
    ///
    /// The caller must have set `no_new_privs` first. Without Landlock in the
    /// kernel there is no ruleset and this does nothing: `enforced` already
    /// reports `None` and the caller decides whether the run may go on.
    pub fn restrict_self(&mut self) -> Result<(), Errno> {
        let Some(ruleset) = &self.ruleset else {
            return Ok(());
        };
        // The landlock crate's `RulesetCreated::restrict_self` builds a status
        // value and may allocate, so the syscall is made directly here.
        // SAFETY: the descriptor is a valid Landlock ruleset owned by `self`,
        // and flags 0 selects no optional behaviour. The call reads no memory.
        let result = unsafe {
            libc::syscall(
                libc::SYS_landlock_restrict_self,
                ruleset.as_raw_fd(),
                0 as libc::c_uint,
            )
        };
        if result != 0 {
            return Err(Errno::last());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Position;

    fn no_network() -> NetworkPolicy {
        NetworkPolicy {
            mode: NetworkMode::None,
            allow: Vec::new(),
            tcp_connect: Vec::new(),
        }
    }

    fn rule(path: &Path, access: Access) -> PathRule {
        PathRule {
            declared: path.display().to_string(),
            position: Position::default(),
            target: RuleTarget::Path {
                path: path.to_owned(),
                symlink_from: None,
                exists: true,
                is_dir: path.is_dir(),
            },
            access,
        }
    }

    #[test]
    fn rights_read_has_no_execute() {
        let rights = directory_rights(READ);
        assert!(rights.contains(AccessFs::ReadFile | AccessFs::ReadDir));
        assert!(!rights.contains(AccessFs::Execute));
        assert!(!rights.contains(AccessFs::WriteFile));
    }

    #[test]
    fn rights_write_has_refer_and_truncate() {
        let rights = directory_rights(READ_WRITE);
        assert!(rights.contains(AccessFs::Refer));
        assert!(rights.contains(AccessFs::Truncate));
        assert!(rights.contains(AccessFs::IoctlDev));
        assert!(!rights.contains(AccessFs::Execute));
    }

    #[test]
    fn rights_on_file_are_file_rights() {
        let rights = rights_for(
            Access {
                read: true,
                write: true,
                exec: true,
            },
            false,
        );
        assert!(rights.contains(
            AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Execute | AccessFs::Truncate
        ));
        assert!(!rights.contains(AccessFs::ReadDir));
        assert!(!rights.contains(AccessFs::Refer));
        assert!(!rights.contains(AccessFs::MakeReg));
    }

    #[test]
    fn missing_features_by_abi() {
        let network = no_network();
        let dir = std::env::temp_dir();
        let rules = [rule(&dir, READ_WRITE)];
        let request = LandlockRequest {
            rules: &rules,
            system: true,
            run_tmp: &dir,
            network: &network,
        };
        assert!(matches!(missing_features(0, &request), Enforced::None(_)));
        assert_eq!(missing_features(1, &request).missing().len(), 4);
        assert_eq!(missing_features(3, &request).missing().len(), 2);
        assert_eq!(missing_features(6, &request), Enforced::Full);
        assert_eq!(missing_features(7, &request), Enforced::Full);
    }

    #[test]
    fn missing_tcp_only_when_ports_requested() {
        let dir = std::env::temp_dir();
        let open = NetworkPolicy {
            mode: NetworkMode::Open,
            allow: Vec::new(),
            tcp_connect: vec![443],
        };
        let request = LandlockRequest {
            rules: &[],
            system: false,
            run_tmp: &dir,
            network: &open,
        };
        assert!(
            missing_features(3, &request)
                .missing()
                .iter()
                .any(|m| m.contains("TCP"))
        );
        let none = no_network();
        let request = LandlockRequest {
            rules: &[],
            system: false,
            run_tmp: &dir,
            network: &none,
        };
        assert!(
            !missing_features(3, &request)
                .missing()
                .iter()
                .any(|m| m.contains("TCP"))
        );
    }

    #[test]
    fn prepare_lists_grants_and_preset() {
        let dir = tempfile::tempdir().unwrap();
        let network = no_network();
        let rules = [rule(dir.path(), READ_WRITE)];
        let request = LandlockRequest {
            rules: &rules,
            system: true,
            run_tmp: dir.path(),
            network: &network,
        };
        let prepared = prepare(&request).unwrap();
        assert!(
            prepared
                .grants
                .iter()
                .any(|g| g.path == Path::new("/usr") && g.system)
        );
        assert!(
            prepared
                .grants
                .iter()
                .any(|g| g.path == dir.path() && g.rights == "read+write" && !g.system)
        );
        assert!(
            !prepared
                .grants
                .iter()
                .any(|g| g.path == Path::new("/lib32") && !Path::new("/lib32").exists())
        );
        assert_eq!(prepared.ruleset_fd().is_some(), prepared.abi > 0);
    }

    #[test]
    fn prepare_rejects_missing_path() {
        let network = no_network();
        let missing = Path::new("/nonexistent/safe-exec-test");
        let rules = [rule(missing, READ)];
        let request = LandlockRequest {
            rules: &rules,
            system: false,
            run_tmp: missing,
            network: &network,
        };
        let err = prepare(&request).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/safe-exec-test"),
            "{err}"
        );
    }
}
