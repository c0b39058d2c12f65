//! `init`, `cred ...` and `validate`: the command-line side of the vault.
//!
//! Values go to stdout only for `cred get`. Every other output names
//! services and keys. Reports go to stdout, warnings to stderr.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::{DateTime, Utc};
use zeroize::Zeroizing;

use super::{Failure, Outcome};
use crate::audit::{Actor, AuditLog, Level};
use crate::cli::{
    CredCommand, CredExportArgs, CredKeyArgs, CredListArgs, CredMigrateArgs, CredRotateArgs,
    CredRotateMasterKeyArgs, CredStoreArgs, InitArgs, KeyBackend, ValidateArgs,
};
use crate::context::Context;
use crate::exit::Code;
use crate::vault::format::{BackendRecord, Entry, VaultFile};
use crate::vault::keys::{self, PassphraseSource, Slot};
use crate::vault::migrate::{self, MigrationReport};
use crate::vault::{
    self, Vault, VaultError, audit_access, check_key_name, check_service_name, crypto,
    open_audited, permissions, store,
};

/// Name of the audit log that records vault commands run outside an app.
const VAULT_AUDIT_APP: &str = "vault";

fn new_run_id() -> String {
    let suffix = crypto::random_bytes::<6>()
        .map(hex::encode)
        .unwrap_or_else(|_| std::process::id().to_string());
    format!("cli-{suffix}")
}

/// Runs `init`.
pub fn init(context: &Context, args: InitArgs) -> Outcome {
    let dir = &context.vault_dir;
    if store::vault_path(dir).exists() {
        return Err(VaultError::AlreadyInitialised { dir: dir.clone() }.into());
    }

    let backend = match args.key_backend {
        KeyBackend::Auto => {
            keys::secret_service_available().map_err(|err| VaultError::NoKeyring {
                reason: err.to_string(),
            })?;
            BackendRecord::SecretService
        }
        KeyBackend::SecretService => {
            keys::secret_service_available().map_err(VaultError::from)?;
            BackendRecord::SecretService
        }
        KeyBackend::Keyutils => BackendRecord::Keyutils,
        KeyBackend::File => {
            let path = args
                .key_file
                .unwrap_or_else(|| context.home.join(".config/safe-exec/master.key"));
            let path = std::path::absolute(&path).unwrap_or(path);
            if path.starts_with(dir) {
                eprintln!(
                    "warning: the key file {} is inside the vault directory; anyone who copies the vault gets its key too",
                    path.display()
                );
            }
            BackendRecord::File { path }
        }
        KeyBackend::Passphrase => BackendRecord::Passphrase {
            salt: hex::encode(crypto::random_bytes::<16>().map_err(VaultError::from)?),
            cost: crypto::Argon2Cost::DEFAULT,
        },
    };

    let vault_id = hex::encode(crypto::random_bytes::<16>().map_err(VaultError::from)?);
    let master = match &backend {
        BackendRecord::Passphrase { salt, cost } => {
            let passphrase = keys::passphrase(true).map_err(VaultError::from)?;
            let salt = hex::decode(salt)
                .map_err(|_| VaultError::InvalidInput("generated salt is not hex".into()))?;
            crypto::argon2id(passphrase.as_bytes(), &salt, *cost).map_err(VaultError::from)?
        }
        _ => crypto::random_key().map_err(VaultError::from)?,
    };
    keys::store(&backend, &vault_id, Slot::Current, &master).map_err(VaultError::from)?;
    if let Err(err) = Vault::create(dir, backend.clone(), vault_id.clone(), master) {
        let _ = keys::delete(&backend, &vault_id, Slot::Current);
        return Err(err.into());
    }

    if let Err(message) = verify_in_fresh_process(context, &backend) {
        let _ = std::fs::remove_file(store::vault_path(dir));
        let _ = keys::delete(&backend, &vault_id, Slot::Current);
        return Err(Failure::new(
            Code::Supervisor,
            format!(
                "the master key did not round-trip through the {} backend in a fresh process ({message}); the vault was not created",
                backend.name()
            ),
        ));
    }

    println!("Created the vault in {}.", dir.display());
    match &backend {
        BackendRecord::SecretService => {
            println!("The master key is in the Secret Service's default collection.")
        }
        BackendRecord::Keyutils => println!(
            "The master key is in the kernel user keyring. It is lost at reboot and the vault cannot be opened after that."
        ),
        BackendRecord::File { path } => println!(
            "The master key is in {} (mode 0600). Keep a backup of it.",
            path.display()
        ),
        BackendRecord::Passphrase { .. } => {
            println!("The master key is derived from your passphrase with argon2id.")
        }
    }
    Ok(0)
}

/// Opens the new vault from another process of this binary, so `init` only
/// reports success for a key that a later run can load.
fn verify_in_fresh_process(context: &Context, backend: &BackendRecord) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|err| format!("cannot find this program: {err}"))?;
    let mut command = Command::new(exe);
    command
        .arg("--vault")
        .arg(&context.vault_dir)
        .arg("-q")
        .args(["cred", "verify-key"]);
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    let passphrase = match backend {
        BackendRecord::Passphrase { .. } => {
            command.args(["--passphrase-fd", "0"]).stdin(Stdio::piped());
            Some(keys::passphrase(false).map_err(|err| err.to_string())?)
        }
        _ => {
            command.stdin(Stdio::null());
            None
        }
    };
    let mut child = command
        .spawn()
        .map_err(|err| format!("cannot start the check: {err}"))?;
    if let (Some(passphrase), Some(mut stdin)) = (passphrase, child.stdin.take()) {
        stdin
            .write_all(passphrase.as_bytes())
            .map_err(|err| format!("cannot pass the passphrase: {err}"))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|err| format!("the check failed: {err}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
}

/// Runs a `cred` subcommand.
pub fn cred(context: &Context, command: CredCommand) -> Outcome {
    match command {
        CredCommand::Store(args) => store_value(context, args),
        CredCommand::Get(args) => get(context, args),
        CredCommand::List(args) => list(context, args),
        CredCommand::Delete(args) => delete(context, args),
        CredCommand::CheckRotation(args) => check_rotation(context, args.json),
        CredCommand::Rotate(args) => rotate(context, args),
        CredCommand::RotateMasterKey(args) => rotate_master_key(context, args),
        CredCommand::Migrate(args) => migrate(context, args),
        CredCommand::ExportLambda(args) => export_lambda(context, args),
        CredCommand::VerifyKey => {
            store::open_read_only(&context.vault_dir)?;
            Ok(0)
        }
    }
}

fn audit_change(
    context: &Context,
    run_id: &str,
    event: &str,
    level: Level,
    details: serde_json::Value,
) -> Result<(), VaultError> {
    AuditLog::open(context, VAULT_AUDIT_APP, run_id)?.append(
        event,
        level,
        Actor::Supervisor,
        details,
    )?;
    Ok(())
}

fn store_value(context: &Context, args: CredStoreArgs) -> Outcome {
    check_service_name(&args.service)?;
    check_key_name(&args.key)?;
    let value = read_value(&args)?;
    let run_id = new_run_id();

    let mut vault = open_audited(context, VAULT_AUDIT_APP, &run_id)?;
    vault.put(&args.service, &args.key, &value, args.rotate_days)?;
    vault.save()?;
    drop(vault);

    verify_stored(context, &args.service, &args.key, &value)?;
    audit_change(
        context,
        &run_id,
        "CREDENTIAL_STORED",
        Level::Info,
        serde_json::json!({ "service": args.service, "key": args.key }),
    )?;
    println!("Stored {}/{}.", args.service, args.key);
    Ok(0)
}

/// Reads the value back from disk in a fresh unlock and compares it.
fn verify_stored(
    context: &Context,
    service: &str,
    key: &str,
    expected: &str,
) -> Result<(), VaultError> {
    let (file, keys) = store::open_read_only(&context.vault_dir)?;
    let stored = store::decrypt_value(&file, &keys, service, key)?;
    if stored.as_str() != expected {
        return Err(VaultError::InvalidInput(format!(
            "verification failed: {service}/{key} read back from the vault differs from the value stored"
        )));
    }
    Ok(())
}

fn read_value(args: &CredStoreArgs) -> Result<Zeroizing<String>, VaultError> {
    let value = if let Some(path) = &args.value_file {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| VaultError::Io {
            action: "read",
            path: path.clone(),
            source,
        })?);
        Zeroizing::new(
            std::str::from_utf8(&bytes)
                .map_err(|_| {
                    VaultError::InvalidInput(format!("{} is not UTF-8 text", path.display()))
                })?
                .to_owned(),
        )
    } else if let Some(value) = &args.value {
        eprintln!(
            "warning: a value given with --value is visible in `ps` and saved in your shell history; prefer stdin or --value-file"
        );
        Zeroizing::new(value.clone())
    } else if std::io::stdin().is_terminal() {
        let first = Zeroizing::new(
            rpassword::prompt_password(format!("Value of {}/{}: ", args.service, args.key))
                .map_err(io_stdin)?,
        );
        let second = Zeroizing::new(rpassword::prompt_password("Repeat it: ").map_err(io_stdin)?);
        if first != second {
            return Err(VaultError::InvalidInput(
                "the two entries differ; nothing was stored".into(),
            ));
        }
        first
    } else {
        read_stdin_value()?
    };
    if value.is_empty() {
        return Err(VaultError::InvalidInput(
            "the value is empty; nothing was stored".into(),
        ));
    }
    Ok(value)
}

fn io_stdin(source: std::io::Error) -> VaultError {
    VaultError::Io {
        action: "read",
        path: PathBuf::from("stdin"),
        source,
    }
}

/// Reads all of stdin as the value and removes one trailing newline.
fn read_stdin_value() -> Result<Zeroizing<String>, VaultError> {
    let mut bytes = Zeroizing::new(Vec::new());
    std::io::stdin().read_to_end(&mut bytes).map_err(io_stdin)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| VaultError::InvalidInput("the value on stdin is not UTF-8 text".into()))?;
    let text = text
        .strip_suffix('\n')
        .map(|rest| rest.strip_suffix('\r').unwrap_or(rest))
        .unwrap_or(text);
    Ok(Zeroizing::new(text.to_owned()))
}

fn get(context: &Context, args: CredKeyArgs) -> Outcome {
    check_service_name(&args.service)?;
    check_key_name(&args.key)?;
    let run_id = new_run_id();
    let mut vault = open_audited(context, VAULT_AUDIT_APP, &run_id)?;
    let value = vault.get(&args.service, &args.key)?;
    vault.mark_access(&args.service, &args.key);
    vault.save()?;
    drop(vault);

    audit_access(
        &AuditLog::open(context, VAULT_AUDIT_APP, &run_id).map_err(VaultError::from)?,
        &args.service,
        &args.key,
        "get",
    )?;
    let mut stdout = std::io::stdout().lock();
    let newline = if stdout.is_terminal() { "\n" } else { "" };
    write!(stdout, "{}{newline}", value.as_str())
        .and_then(|()| stdout.flush())
        .map_err(|source| VaultError::Io {
            action: "write",
            path: PathBuf::from("stdout"),
            source,
        })?;
    Ok(0)
}

fn list(context: &Context, args: CredListArgs) -> Outcome {
    let file = store::read_file(&context.vault_dir)?;
    let now = Utc::now();
    let entries: Vec<&Entry> = file
        .entries()
        .filter(|entry| {
            args.service
                .as_ref()
                .is_none_or(|service| &entry.service == service)
        })
        .collect();

    if args.json {
        let rows: Vec<serde_json::Value> =
            entries.iter().map(|entry| entry_json(entry, now)).collect();
        let report = serde_json::json!({
            "backend": file.header.backend.name(),
            "credentials": rows,
            "damaged": damaged_json(&file),
            "missing_entries": file.missing_entries,
        });
        println!("{report}");
        return Ok(0);
    }

    println!(
        "{:<24} {:<28} {:>8} {:<20} {:<20}",
        "SERVICE", "KEY", "AGE", "ROTATION DUE", "LAST ACCESS"
    );
    for entry in &entries {
        let age = (now - entry.updated).num_days();
        let due = match entry.rotation_due() {
            Some(due) if due < now => format!("{} OVERDUE", due.format("%Y-%m-%d")),
            Some(due) => due.format("%Y-%m-%d").to_string(),
            None => "-".into(),
        };
        let access = entry.last_access.map_or_else(
            || "never".to_owned(),
            |at| at.format("%Y-%m-%d %H:%M").to_string(),
        );
        let pending = if entry.previous.is_some() {
            "  (rotation not confirmed)"
        } else {
            ""
        };
        println!(
            "{:<24} {:<28} {:>7}d {:<20} {:<20}{pending}",
            entry.service, entry.key, age, due, access
        );
    }
    report_damage(&file);
    Ok(0)
}

fn entry_json(entry: &Entry, now: DateTime<Utc>) -> serde_json::Value {
    let due = entry.rotation_due();
    serde_json::json!({
        "service": entry.service,
        "key": entry.key,
        "created": entry.created,
        "updated": entry.updated,
        "age_days": (now - entry.updated).num_days(),
        "rotate_days": entry.rotate_days,
        "rotation_due": due,
        "overdue": due.is_some_and(|due| due < now),
        "last_access": entry.last_access,
        "rotation_unconfirmed": entry.previous.is_some(),
    })
}

fn damaged_json(file: &VaultFile) -> Vec<serde_json::Value> {
    file.damaged().map(|damaged| serde_json::json!({ "line": damaged.number, "name": damaged.name, "reason": damaged.reason })).collect()
}

fn report_damage(file: &VaultFile) {
    for damaged in file.damaged() {
        let name = damaged.name.as_deref().unwrap_or("unknown entry");
        eprintln!(
            "warning: vault line {} ({name}) is damaged: {}",
            damaged.number, damaged.reason
        );
    }
    if file.missing_entries > 0 {
        eprintln!(
            "warning: the vault file is truncated: its header lists {} more entries than it holds",
            file.missing_entries
        );
    }
}

fn delete(context: &Context, args: CredKeyArgs) -> Outcome {
    check_service_name(&args.service)?;
    check_key_name(&args.key)?;
    let run_id = new_run_id();
    let mut vault = open_audited(context, VAULT_AUDIT_APP, &run_id)?;
    vault.remove(&args.service, &args.key)?;
    vault.save()?;
    drop(vault);
    audit_change(
        context,
        &run_id,
        "CREDENTIAL_DELETED",
        Level::Info,
        serde_json::json!({ "service": args.service, "key": args.key }),
    )?;
    println!("Deleted {}/{}.", args.service, args.key);
    Ok(0)
}

fn check_rotation(context: &Context, json: bool) -> Outcome {
    let file = store::read_file(&context.vault_dir)?;
    let now = Utc::now();
    let overdue: Vec<&Entry> = file
        .entries()
        .filter(|entry| entry.rotation_due().is_some_and(|due| due < now))
        .collect();
    if json {
        let rows: Vec<serde_json::Value> =
            overdue.iter().map(|entry| entry_json(entry, now)).collect();
        println!("{}", serde_json::json!({ "overdue": rows }));
    } else if overdue.is_empty() {
        println!("No credential is past its rotation date.");
    } else {
        for entry in &overdue {
            let due = entry
                .rotation_due()
                .map(|due| due.format("%Y-%m-%d").to_string())
                .unwrap_or_default();
            println!(
                "{}/{}: rotation was due on {due}; run `safe-exec cred rotate --service {}`",
                entry.service, entry.key, entry.service
            );
        }
    }
    Ok(if overdue.is_empty() {
        0
    } else {
        Code::CheckFailed.as_i32()
    })
}

fn rotate(context: &Context, args: CredRotateArgs) -> Outcome {
    check_service_name(&args.service)?;
    if let Some(key) = &args.key {
        check_key_name(key)?;
    }
    let run_id = new_run_id();
    let mut vault = open_audited(context, VAULT_AUDIT_APP, &run_id)?;
    let mut keys: Vec<String> = vault
        .file()
        .entries()
        .filter(|entry| {
            entry.service == args.service && args.key.as_ref().is_none_or(|key| &entry.key == key)
        })
        .map(|entry| entry.key.clone())
        .collect();
    keys.sort();
    if keys.is_empty() {
        let key = args.key.clone().unwrap_or_else(|| "*".into());
        return Err(VaultError::NotFound {
            service: args.service.clone(),
            key,
        }
        .into());
    }

    if args.confirm || args.rollback {
        let event = if args.confirm {
            "CREDENTIAL_ROTATION_CONFIRMED"
        } else {
            "CREDENTIAL_ROTATION_ROLLED_BACK"
        };
        let mut changed = Vec::new();
        for key in &keys {
            let had_previous = if args.confirm {
                vault.confirm_rotation(&args.service, key)?
            } else {
                vault.roll_back_rotation(&args.service, key)?
            };
            if had_previous {
                changed.push(key.clone());
            }
        }
        vault.save()?;
        drop(vault);
        audit_change(
            context,
            &run_id,
            event,
            Level::Info,
            serde_json::json!({ "service": args.service, "keys": changed }),
        )?;
        let verb = if args.confirm {
            "Confirmed"
        } else {
            "Rolled back"
        };
        println!(
            "{verb} the rotation of {} key(s) of {}: {}",
            changed.len(),
            args.service,
            changed.join(", ")
        );
        return Ok(0);
    }

    let now = Utc::now();
    let due_keys: Vec<String> = keys
        .into_iter()
        .filter(|key| {
            let due = vault
                .file()
                .find(&args.service, key)
                .and_then(Entry::rotation_due);
            let is_due = args.force || due.is_none_or(|due| due <= now);
            if !is_due {
                eprintln!(
                    "{}/{key} is not due until {}; pass --force to rotate it now",
                    args.service,
                    due.map(|d| d.format("%Y-%m-%d").to_string())
                        .unwrap_or_default()
                );
            }
            is_due
        })
        .collect();
    if due_keys.is_empty() {
        return Ok(0);
    }

    let values = read_new_values(&args.service, &due_keys)?;
    for (key, value) in due_keys.iter().zip(values.iter()) {
        vault.rotate(&args.service, key, value)?;
    }
    vault.save()?;
    drop(vault);

    for (key, value) in due_keys.iter().zip(values.iter()) {
        verify_stored(context, &args.service, key, value)?;
    }
    audit_change(
        context,
        &run_id,
        "CREDENTIAL_ROTATED",
        Level::Info,
        serde_json::json!({ "service": args.service, "keys": due_keys }),
    )?;
    println!(
        "Rotated {}: {}. The previous values are kept until you run `safe-exec cred rotate --service {} --confirm` (or `--rollback` to restore them).",
        args.service,
        due_keys.join(", "),
        args.service
    );
    Ok(0)
}

/// Reads one new value per key: hidden prompts on a terminal, otherwise one line of stdin per key, in the order listed.
fn read_new_values(service: &str, keys: &[String]) -> Result<Vec<Zeroizing<String>>, VaultError> {
    if std::io::stdin().is_terminal() {
        let mut values = Vec::new();
        for key in keys {
            let first = Zeroizing::new(
                rpassword::prompt_password(format!("New value of {service}/{key}: "))
                    .map_err(io_stdin)?,
            );
            let second =
                Zeroizing::new(rpassword::prompt_password("Repeat it: ").map_err(io_stdin)?);
            if first != second || first.is_empty() {
                return Err(VaultError::InvalidInput(format!(
                    "the entries for {key} differ or are empty; nothing was rotated"
                )));
            }
            values.push(first);
        }
        return Ok(values);
    }

    eprintln!(
        "Reading {} new value(s) from stdin, one line each, in this order: {}",
        keys.len(),
        keys.join(", ")
    );
    let all = read_stdin_value()?;
    let values: Vec<Zeroizing<String>> = all
        .split('\n')
        .map(|line| Zeroizing::new(line.trim_end_matches('\r').to_owned()))
        .collect();
    if values.len() != keys.len() || values.iter().any(|value| value.is_empty()) {
        return Err(VaultError::InvalidInput(format!(
            "expected {} non-empty line(s) on stdin, got {}; nothing was rotated",
            keys.len(),
            values.len()
        )));
    }
    Ok(values)
}

fn rotate_master_key(context: &Context, args: CredRotateMasterKeyArgs) -> Outcome {
    let run_id = new_run_id();
    let mut vault = open_audited(context, VAULT_AUDIT_APP, &run_id)?;
    let backend = vault.file().header.backend.clone();
    let vault_id = vault.file().header.vault_id.clone();

    let mut new_passphrase = None;
    let (new_backend, master) = match &backend {
        BackendRecord::Passphrase { .. } => {
            let source = PassphraseSource {
                fd: args.new_passphrase_fd,
                env: args.new_passphrase_env.clone(),
            };
            let passphrase =
                if source.fd.is_some() || source.env.is_some() || std::io::stdin().is_terminal() {
                    keys::read_passphrase(&source, "New vault passphrase: ", true)
                        .map_err(VaultError::from)?
                } else {
                    keys::passphrase(false).map_err(VaultError::from)?
                };
            let salt = crypto::random_bytes::<16>().map_err(VaultError::from)?;
            let cost = crypto::Argon2Cost::DEFAULT;
            let master =
                crypto::argon2id(passphrase.as_bytes(), &salt, cost).map_err(VaultError::from)?;
            new_passphrase = Some(passphrase);
            (
                BackendRecord::Passphrase {
                    salt: hex::encode(salt),
                    cost,
                },
                master,
            )
        }
        other => {
            let master = crypto::random_key().map_err(VaultError::from)?;
            // The new key waits in the pending slot until the vault file is rewritten under it.
            keys::store(other, &vault_id, Slot::Pending, &master).map_err(VaultError::from)?;
            (other.clone(), master)
        }
    };

    vault.rekey(new_backend, master)?;
    vault.save()?;
    keys::promote_pending(&backend, &vault_id).map_err(VaultError::from)?;
    let count = vault.file().entries().count();
    drop(vault);
    if let Some(passphrase) = new_passphrase {
        keys::replace_passphrase(passphrase);
    }

    let (file, keys) = store::open_read_only(&context.vault_dir)?;
    for entry in file.entries() {
        store::decrypt_check(&file, &keys, &entry.service, &entry.key)?;
    }
    audit_change(
        context,
        &run_id,
        "MASTER_KEY_ROTATED",
        Level::Info,
        serde_json::json!({ "backend": backend.name(), "entries": count }),
    )?;
    println!(
        "Re-encrypted {count} credential(s) under a new master key in the {} backend.",
        backend.name()
    );
    Ok(0)
}

fn migrate(context: &Context, args: CredMigrateArgs) -> Outcome {
    let run_id = new_run_id();
    let mut jobs: Vec<(PathBuf, String)> = Vec::new();
    if args.all {
        let options = context.resolve_options();
        for app in crate::policy::list_apps(&context.policy_dir)? {
            let policy = crate::policy::load(&context.policy_dir, &app, &options)?;
            let service = policy
                .credentials
                .as_ref()
                .map_or_else(|| app.clone(), |creds| creds.service.clone());
            for file in migrate::find_env_files(&policy.workdir) {
                jobs.push((file, service.clone()));
            }
        }
        if jobs.is_empty() {
            println!(
                "No .env file in the workdir of any policy in {}.",
                context.policy_dir.display()
            );
            return Ok(0);
        }
    } else if let (Some(file), Some(service)) = (args.env_file.clone(), args.service.clone()) {
        jobs.push((file, service));
    }

    let mut incomplete = false;
    for (file, service) in jobs {
        let report =
            migrate::migrate_file(context, &file, &service, args.remove_original, &run_id)?;
        incomplete |= report.incomplete();
        audit_change(
            context,
            &run_id,
            "CREDENTIALS_MIGRATED",
            Level::Info,
            serde_json::json!({
                "file": report.file,
                "service": report.service,
                "keys": report.imported.iter().map(|imported| imported.key.as_str()).collect::<Vec<_>>(),
                "original_removed": report.original_removed,
            }),
        )?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string(&report)
                    .map_err(|err| VaultError::InvalidInput(err.to_string()))?
            );
        } else {
            print_migration(&report);
        }
    }
    Ok(if incomplete {
        Code::DataErr.as_i32()
    } else {
        0
    })
}

fn print_migration(report: &MigrationReport) {
    println!("{} -> service {}", report.file.display(), report.service);
    for imported in &report.imported {
        let how = if imported.written {
            "imported"
        } else {
            "already in the vault"
        };
        println!("  line {:>4}  {:<28} {how}", imported.line, imported.key);
    }
    for skipped in &report.skipped {
        println!(
            "  line {:>4}  {:<28} skipped: {}",
            skipped.line, skipped.key, skipped.reason
        );
    }
    for note in &report.notes {
        let kind = match note.kind {
            vault::dotenv::NoteKind::Trimmed => "trimmed",
            vault::dotenv::NoteKind::Ambiguous => "ambiguous",
            vault::dotenv::NoteKind::Rejected => "REJECTED",
        };
        println!(
            "  line {:>4}  {:<28} {kind}: {}",
            note.line,
            note.key.as_deref().unwrap_or("-"),
            note.message
        );
    }
    println!(
        "  {} key(s) verified by reading them back from the vault",
        report.imported.len()
    );
    if report.original_removed {
        println!("  the original was overwritten and removed");
    } else if let Some(reason) = &report.kept_because {
        println!("  the original was kept: {reason}");
    }
}

fn export_lambda(context: &Context, args: CredExportArgs) -> Outcome {
    check_service_name(&args.service)?;
    let run_id = new_run_id();
    let mut output = create_private_file(&args.output)?;

    let result = export_values(context, &args, &run_id).and_then(|document| {
        output
            .write_all(document.as_bytes())
            .and_then(|()| output.sync_all())
            .map_err(|source| VaultError::Io {
                action: "write",
                path: args.output.clone(),
                source,
            })
    });
    if let Err(err) = result {
        drop(output);
        let _ = std::fs::remove_file(&args.output);
        return Err(err.into());
    }

    eprintln!(
        "warning: {} holds the credentials of {} in plaintext. Pass it with `aws secretsmanager create-secret --name {} --secret-string file://{}` and delete it afterwards.",
        args.output.display(),
        args.service,
        args.service,
        args.output.display()
    );
    Ok(0)
}

fn export_values(
    context: &Context,
    args: &CredExportArgs,
    run_id: &str,
) -> Result<Zeroizing<String>, VaultError> {
    let mut vault = open_audited(context, VAULT_AUDIT_APP, run_id)?;
    let keys: Vec<String> = vault
        .file()
        .entries()
        .filter(|entry| entry.service == args.service)
        .map(|entry| entry.key.clone())
        .collect();
    if keys.is_empty() {
        return Err(VaultError::NotFound {
            service: args.service.clone(),
            key: "*".into(),
        });
    }
    let mut values = Vec::new();
    for key in &keys {
        values.push((key.clone(), vault.get(&args.service, key)?));
        vault.mark_access(&args.service, key);
    }
    vault.save()?;
    drop(vault);

    let log = AuditLog::open(context, VAULT_AUDIT_APP, run_id)?;
    for key in &keys {
        audit_access(&log, &args.service, key, "export")?;
    }
    log.append(
        "CREDENTIAL_EXPORT",
        Level::Warning,
        Actor::Supervisor,
        serde_json::json!({
            "service": args.service,
            "keys": keys,
            "output": args.output,
            "format": "aws-secrets-manager",
        }),
    )?;

    let rendered = vault::delivery::render(crate::policy::CredentialFormat::Json, &values);
    let text = std::str::from_utf8(&rendered)
        .map_err(|_| VaultError::InvalidInput("a value is not UTF-8".into()))?;
    Ok(Zeroizing::new(text.to_owned()))
}

/// Creates a new file with mode 0600 and never replaces an existing one.
fn create_private_file(path: &Path) -> Result<std::fs::File, VaultError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                VaultError::Usage(format!(
                    "{} already exists; refusing to overwrite it, choose another --output",
                    path.display()
                ))
            } else {
                VaultError::Io {
                    action: "create",
                    path: path.to_owned(),
                    source,
                }
            }
        })
}

/// Runs `validate`.
pub fn validate(context: &Context, args: ValidateArgs) -> Outcome {
    let (issues, checked) = permissions::validate(context, args.fix);
    let unfixed = issues.iter().filter(|issue| !issue.fixed).count();
    if args.json {
        let report =
            serde_json::json!({ "checked": checked, "issues": issues, "unfixed": unfixed });
        println!("{report}");
    } else {
        for issue in &issues {
            let state = if issue.fixed { "fixed" } else { "problem" };
            println!(
                "{state:<8} {:<10} {}: {}",
                issue.area,
                issue.path.display(),
                issue.problem
            );
        }
        if issues.is_empty() {
            println!("All {checked} paths are private to their owner.");
        } else if unfixed > 0 && !args.fix {
            println!("{unfixed} problem(s); run `safe-exec validate --fix` to set the modes.");
        }
    }
    Ok(if unfixed == 0 {
        0
    } else {
        Code::CheckFailed.as_i32()
    })
}
