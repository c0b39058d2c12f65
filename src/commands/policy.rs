//! `policy lint`, `policy show`, `policy schema` and `policy import`.

use std::path::{Path, PathBuf};

use super::{Failure, Outcome};
use crate::cli::{PolicyCommand, PolicyLintArgs};
use crate::context::Context;
use crate::exit::Code;
use crate::policy::{self, PolicyError, RawPolicy, lint::Finding};

/// Runs a `policy` subcommand.
pub fn policy(context: &Context, command: PolicyCommand) -> Outcome {
    match command {
        PolicyCommand::Lint(args) => lint(context, &args),
        PolicyCommand::Show(args) => {
            let resolved =
                policy::load(&context.policy_dir, &args.app, &context.resolve_options())?;
            if args.json {
                println!("{}", to_json(&resolved)?);
            } else {
                print!("{}", crate::preflight::render::policy_text(&resolved));
            }
            Ok(0)
        }
        PolicyCommand::Schema => {
            let schema = schemars::schema_for!(RawPolicy);
            println!("{}", to_json(&schema)?);
            Ok(0)
        }
        PolicyCommand::Import(args) => {
            crate::preflight::import::import(context, &args.app_dir, args.stdout)
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, Failure> {
    serde_json::to_string_pretty(value)
        .map_err(|err| Failure::new(Code::Supervisor, format!("failed to encode JSON: {err}")))
}

/// Lints the named files, or every policy in the policy directory.
fn lint(context: &Context, args: &PolicyLintArgs) -> Outcome {
    let files: Vec<PathBuf> = if args.files.is_empty() {
        policy::list_apps(&context.policy_dir)?
            .iter()
            .map(|app| context.policy_dir.join(format!("{app}.yaml")))
            .collect()
    } else {
        args.files.clone()
    };
    if files.is_empty() {
        return Err(Failure::new(
            Code::DataErr,
            format!(
                "no policy files in {}; pass files or --policy-dir",
                context.policy_dir.display()
            ),
        ));
    }

    let mut failed = 0;
    for file in &files {
        let findings = lint_file(context, file);
        if args.json {
            let line = serde_json::json!({ "file": file, "ok": findings.is_empty(), "findings": findings });
            println!("{line}");
        } else if findings.is_empty() {
            println!("ok    {}", file.display());
        } else {
            for finding in &findings {
                println!("error {finding}");
            }
        }
        if !findings.is_empty() {
            failed += 1;
        }
    }
    if failed > 0 {
        if !args.json {
            eprintln!(
                "safe-exec: {failed} of {} policy files failed lint",
                files.len()
            );
        }
        return Ok(Code::DataErr.as_i32());
    }
    Ok(0)
}

/// Parses, resolves and lints one file, turning every error into a finding.
pub fn lint_file(context: &Context, file: &Path) -> Vec<Finding> {
    let app = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned();
    let resolved = policy::policy_file(Path::new(""), &app)
        .and_then(|_| policy::parse_file(file))
        .and_then(|raw| policy::resolve::resolve(&app, file, raw, &context.resolve_options()));
    match resolved {
        Ok(resolved) => policy::lint::lint(&resolved, &context.protected()),
        Err(err) => vec![finding_from(file, err)],
    }
}

fn finding_from(file: &Path, err: PolicyError) -> Finding {
    match err {
        PolicyError::Invalid {
            file,
            position,
            message,
        } => Finding {
            file,
            position: Some(position),
            message,
        },
        PolicyError::InvalidFile { file, message } => Finding {
            file,
            position: None,
            message,
        },
        other => Finding {
            file: file.to_owned(),
            position: None,
            message: other.to_string(),
        },
    }
}
