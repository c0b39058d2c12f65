//! The `audit` section of `<vault>/config.yaml`.
//!
//! ```yaml
//! audit:
//!   alert_command: "notify-send 'safe-exec alert'"  # run by /bin/sh -c, CRITICAL record on stdin
//!   alert_timeout_secs: 10   # killed after this long and logged as ALERT_FAILED
//!   fsync: true              # fsync the log and the anchor after every record
//!   syslog: true             # send CRITICAL records to syslog
//!   syslog_head: true        # send the chain head to syslog at every RUN_END
//! ```
//!
//! `$SAFE_EXEC_ALERT_COMMAND`, when set, replaces `alert_command` (an empty
//! value turns the alert off). Other top-level keys belong to other parts of
//! `safe-exec` and are ignored here.

use std::path::Path;

use serde::Deserialize;

use super::AuditError;

/// Name of the environment variable that overrides `audit.alert_command`.
pub const ALERT_COMMAND_ENV: &str = "SAFE_EXEC_ALERT_COMMAND";

/// Settings of the audit log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Shell command run for every CRITICAL record, with the record on stdin.
    #[serde(default)]
    pub alert_command: Option<String>,
    /// Seconds an alert command may run before it is killed.
    #[serde(default = "default_alert_timeout")]
    pub alert_timeout_secs: u64,
    /// Whether every record and anchor update is fsynced before `append` returns.
    #[serde(default = "yes")]
    pub fsync: bool,
    /// Whether CRITICAL records go to syslog.
    #[serde(default = "yes")]
    pub syslog: bool,
    /// Whether the chain head goes to syslog with every RUN_END record.
    #[serde(default = "yes")]
    pub syslog_head: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            alert_command: None,
            alert_timeout_secs: default_alert_timeout(),
            fsync: true,
            syslog: true,
            syslog_head: true,
        }
    }
}

fn default_alert_timeout() -> u64 {
    10
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    audit: Option<AuditConfig>,
}

/// Reads the audit settings from `<vault>/config.yaml` (defaults when the
/// file or its `audit` section is missing) and applies the environment override.
pub fn load(vault_dir: &Path) -> Result<AuditConfig, AuditError> {
    let file = vault_dir.join("config.yaml");
    let mut config = match std::fs::read_to_string(&file) {
        Ok(text) if text.trim().is_empty() => AuditConfig::default(),
        Ok(text) => {
            let parsed: ConfigFile =
                serde_saphyr::from_str(&text).map_err(|err| AuditError::Config {
                    file: file.clone(),
                    reason: err.to_string(),
                })?;
            parsed.audit.unwrap_or_default()
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => AuditConfig::default(),
        Err(err) => {
            return Err(AuditError::Config {
                file,
                reason: err.to_string(),
            });
        }
    };

    if let Some(command) = std::env::var_os(ALERT_COMMAND_ENV) {
        let command = command.to_string_lossy().trim().to_owned();
        config.alert_command = if command.is_empty() {
            None
        } else {
            Some(command)
        };
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_section_is_read_and_others_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.yaml"),
            "key_backend: file\naudit:\n  alert_command: \"cat > /dev/null\"\n  fsync: false\n",
        )
        .unwrap();
        let text = std::fs::read_to_string(dir.path().join("config.yaml")).unwrap();
        let parsed: ConfigFile = serde_saphyr::from_str(&text).unwrap();
        let config = parsed.audit.unwrap();
        assert_eq!(config.alert_command.as_deref(), Some("cat > /dev/null"));
        assert!(!config.fsync);
        assert!(config.syslog);
    }

    #[test]
    fn unknown_audit_key_is_rejected() {
        let parsed: Result<ConfigFile, _> = serde_saphyr::from_str("audit:\n  alert: x\n");
        assert!(parsed.is_err());
    }
}
