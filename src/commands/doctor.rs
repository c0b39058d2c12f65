//! `safe-exec doctor`: what this kernel and host support, and what each
//! policy feature needs.

use serde_json::json;

use super::Outcome;
use crate::context::Context;
use crate::sandbox::kernel;

/// One policy feature and whether this host can enforce it.
struct Feature {
    name: &'static str,
    needs: &'static str,
    available: bool,
}

/// Prints the host report; exits 1 when Landlock or seccomp is missing.
pub fn doctor(context: &Context, json: bool) -> Outcome {
    let abi = kernel::landlock_abi();
    let seccomp = kernel::seccomp_available();
    let userns = kernel::probe_user_namespaces();
    let cgroup = kernel::cgroup_version();
    let uname = nix::sys::utsname::uname().ok();
    let kernel_release = uname
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let machine = uname
        .as_ref()
        .map(|u| u.machine().to_string_lossy().into_owned())
        .unwrap_or_default();

    let features = [
        Feature {
            name: "filesystem rules",
            needs: "Landlock ABI 1 (Linux 5.13)",
            available: abi >= 1,
        },
        Feature {
            name: "rename across directories in write grants",
            needs: "Landlock ABI 2 (Linux 5.19)",
            available: abi >= 2,
        },
        Feature {
            name: "truncate only in write grants",
            needs: "Landlock ABI 3 (Linux 6.2)",
            available: abi >= 3,
        },
        Feature {
            name: "network.tcp_connect ports",
            needs: "Landlock ABI 4 (Linux 6.7)",
            available: abi >= 4,
        },
        Feature {
            name: "device ioctl only in write grants",
            needs: "Landlock ABI 5 (Linux 6.10)",
            available: abi >= 5,
        },
        Feature {
            name: "abstract Unix socket and signal scopes",
            needs: "Landlock ABI 6 (Linux 6.12)",
            available: abi >= 6,
        },
        Feature {
            name: "syscall filter",
            needs: "seccomp filters",
            available: seccomp,
        },
        Feature {
            name: "network.mode none as an empty network namespace",
            needs: "user namespaces (else: socket families other than AF_UNIX are denied by seccomp)",
            available: userns.available,
        },
        Feature {
            name: "process tree ends with the run, even after SIGKILL of safe-exec",
            needs: "a PID namespace (else: a subreaper init with a parent-death signal)",
            available: userns.available,
        },
    ];

    if json {
        let report = json!({
            "kernel": kernel_release,
            "machine": machine,
            "landlock_abi": abi,
            "seccomp": seccomp,
            "user_namespaces": userns.available,
            "user_namespaces_reason": userns.reason,
            "cgroup": cgroup,
            "vault": context.vault_dir,
            "policy_dir": context.policy_dir,
            "features": features.iter().map(|f| json!({ "feature": f.name, "needs": f.needs, "available": f.available })).collect::<Vec<_>>(),
        });
        println!("{report}");
    } else {
        println!("kernel:           {kernel_release} ({machine})");
        match abi {
            0 => println!(
                "Landlock:         not available (needs Linux 5.13 or newer with landlock in the lsm= list)"
            ),
            abi => println!("Landlock:         ABI {abi}"),
        }
        println!(
            "seccomp:          {}",
            if seccomp {
                "available"
            } else {
                "not available"
            }
        );
        match &userns.reason {
            None => println!("user namespaces:  available"),
            Some(reason) => println!("user namespaces:  not available ({reason})"),
        }
        println!("cgroup:           {cgroup} (not used by safe-exec)");
        println!("vault:            {}", context.vault_dir.display());
        println!("policy directory: {}", context.policy_dir.display());
        println!();
        println!("policy features:");
        for feature in &features {
            let mark = if feature.available { "yes" } else { "NO " };
            println!("  {mark}  {:<62} needs {}", feature.name, feature.needs);
        }
    }
    Ok(if abi >= 1 && seccomp { 0 } else { 1 })
}
