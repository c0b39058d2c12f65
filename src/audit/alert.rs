//! The extra destinations of CRITICAL records: `critical_events.log`,
//! syslog, and the configured alert command.
//!
//! None of these may block or fail an append: errors are logged with
//! `tracing`, and the writer records a failed alert command as an
//! ALERT_FAILED record.

use std::ffi::CString;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::files::open_append;

/// Name of the file beside the app logs that collects every CRITICAL record.
pub const CRITICAL_LOG: &str = "critical_events.log";

/// Appends `line` (ending in `\n`) to `critical_events.log` in `audit_dir` with one write.
pub fn append_critical_log(audit_dir: &Path, line: &[u8]) -> Result<(), String> {
    let path = audit_dir.join(CRITICAL_LOG);
    let mut file = open_append(&path).map_err(|err| err.to_string())?;
    file.write_all(line)
        .map_err(|err| format!("failed to write {}: {err}", path.display()))
}

/// Syslog priorities used here.
#[derive(Debug, Clone, Copy)]
pub enum Priority {
    Critical,
    Info,
}

/// Sends `message` to syslog under the ident `safe-exec`, facility authpriv.
///
/// With no syslog daemon listening the C library drops the message, which
/// is what an audit append needs: the log file stays the record of truth.
pub fn syslog(priority: Priority, message: &str) {
    let level = match priority {
        Priority::Critical => libc::LOG_CRIT,
        Priority::Info => libc::LOG_INFO,
    };
    let Ok(message) = CString::new(message.replace('\0', " ")) else {
        return;
    };
    // SAFETY: the ident is a 'static C string, which openlog requires because
    // it keeps the pointer. The format is a literal "%s" with exactly one
    // NUL-terminated string argument, and that string lives until syslog returns.
    unsafe {
        libc::openlog(c"safe-exec".as_ptr(), libc::LOG_PID, libc::LOG_AUTHPRIV);
        libc::syslog(level, c"%s".as_ptr(), message.as_ptr());
    }
}

/// Runs `command` with `/bin/sh -c`, writes `line` to its stdin and waits up
/// to `timeout` for it; returns a description of the failure, if any.
pub fn run_alert_command(
    command: &str,
    app: &str,
    line: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env("SAFE_EXEC_ALERT_APP", app)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|err| format!("failed to start alert command: {err}"))?;

    // A command that does not read its stdin closes the pipe; that is not a failure.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(line);
    }

    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("alert command failed with {status}")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "alert command timed out after {}s and was killed",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(err) => return Err(format!("failed to wait for alert command: {err}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_command_gets_record_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let command = format!("cat > {}", out.display());
        run_alert_command(&command, "mail", b"{\"seq\":1}\n", Duration::from_secs(10)).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"{\"seq\":1}\n");
    }

    #[test]
    fn failing_alert_command_is_reported() {
        let result = run_alert_command("exit 3", "mail", b"x\n", Duration::from_secs(10));
        assert!(result.unwrap_err().contains("exit status: 3"));
    }

    #[test]
    fn hanging_alert_command_is_killed() {
        let result = run_alert_command("sleep 30", "mail", b"x\n", Duration::from_millis(200));
        assert!(result.unwrap_err().contains("timed out"));
    }

    #[test]
    fn syslog_without_daemon_returns() {
        syslog(Priority::Info, "safe-exec unit test message");
    }
}
