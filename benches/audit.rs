//! Audit log throughput: appends per second with and without fsync per
//! record, and `audit verify` speed in MB/s next to `sha256sum` on the same
//! file in the same run. Run it with `scripts/bench-audit`.
//!
//! Options (after `--`): `--records N` for the verify file (default 32768),
//! `--record-bytes B` detail size (default 4096), `--fsync-records N`
//! (default 2000), `--dir DIR` for the files (default: a temporary directory
//! under $TMPDIR, which decides the file system measured).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use safe_exec::audit::verify::{DayRange, verify_app};
use safe_exec::audit::{Actor, AuditLog, Level, MacKey};
use safe_exec::context::Context;

struct Options {
    records: usize,
    record_bytes: usize,
    fsync_records: usize,
    dir: Option<PathBuf>,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        records: 32_768,
        record_bytes: 4096,
        fsync_records: 2000,
        dir: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--records" => {
                options.records = value()?
                    .parse()
                    .map_err(|err| format!("--records: {err}"))?
            }
            "--record-bytes" => {
                options.record_bytes = value()?
                    .parse()
                    .map_err(|err| format!("--record-bytes: {err}"))?
            }
            "--fsync-records" => {
                options.fsync_records = value()?
                    .parse()
                    .map_err(|err| format!("--fsync-records: {err}"))?
            }
            "--dir" => options.dir = Some(PathBuf::from(value()?)),
            // cargo bench passes --bench to every bench target.
            "--bench" => {}
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(options)
}

fn context(dir: &Path) -> Context {
    Context {
        vault_dir: dir.join("vault"),
        policy_dir: dir.join("policies"),
        home: dir.to_owned(),
    }
}

/// Appends `count` records and returns records per second.
fn append_rate(
    context: &Context,
    app: &str,
    count: usize,
    record_bytes: usize,
    fsync: bool,
) -> Result<f64, String> {
    let key = MacKey::from_bytes([7; 32]);
    let log = AuditLog::open_with_key(context, app, "bench", key)
        .map_err(|err| err.to_string())?
        .with_fsync(fsync);
    let padding = "p".repeat(record_bytes);
    let start = Instant::now();
    for index in 0..count {
        let details = serde_json::json!({ "n": index, "pad": padding });
        log.append("API_CALL", Level::Info, Actor::App, details)
            .map_err(|err| err.to_string())?;
    }
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

fn sha256sum_seconds(file: &Path) -> Result<f64, String> {
    let start = Instant::now();
    let output = Command::new("sha256sum")
        .arg(file)
        .output()
        .map_err(|err| format!("failed to run sha256sum: {err}"))?;
    if !output.status.success() {
        return Err(format!("sha256sum failed: {}", output.status));
    }
    Ok(start.elapsed().as_secs_f64())
}

fn run() -> Result<(), String> {
    let options = parse_options()?;
    let temporary = match &options.dir {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .map_err(|err| format!("failed to create the bench directory: {err}"))?;
    let context = context(temporary.path());
    println!("directory: {}", temporary.path().display());
    println!("record detail size: {} bytes", options.record_bytes);

    let rate = append_rate(
        &context,
        "fsync",
        options.fsync_records,
        options.record_bytes,
        true,
    )?;
    println!(
        "append, fsync per record: {rate:.0} records/s ({} records)",
        options.fsync_records
    );
    let rate = append_rate(
        &context,
        "bench",
        options.records,
        options.record_bytes,
        false,
    )?;
    println!(
        "append, no fsync:         {rate:.0} records/s ({} records)",
        options.records
    );

    let key = MacKey::from_bytes([7; 32]);
    let day_files: Vec<PathBuf> = std::fs::read_dir(context.audit_dir().join("bench"))
        .map_err(|err| err.to_string())?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .collect();
    let [file] = day_files.as_slice() else {
        return Err(format!(
            "expected one day file, found {day_files:?} (did the run cross midnight UTC?)"
        ));
    };
    let bytes = std::fs::metadata(file)
        .map_err(|err| err.to_string())?
        .len() as f64;
    let megabytes = bytes / 1_000_000.0;

    // Warm the page cache once, then take the best of three for both.
    sha256sum_seconds(file)?;
    let mut verify_best = f64::MAX;
    let mut sha_best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let result = verify_app(&context.audit_dir(), "bench", &key, &DayRange::default())
            .map_err(|err| err.to_string())?;
        verify_best = verify_best.min(start.elapsed().as_secs_f64());
        if !result.intact {
            return Err(format!(
                "the bench log does not verify: {:?}",
                result.findings
            ));
        }
        sha_best = sha_best.min(sha256sum_seconds(file)?);
    }
    let verify_speed = megabytes / verify_best;
    let sha_speed = megabytes / sha_best;
    println!("file: {megabytes:.1} MB");
    println!("verify:    {verify_speed:.0} MB/s");
    println!("sha256sum: {sha_speed:.0} MB/s");
    println!("verify / sha256sum: {:.2}", verify_speed / sha_speed);
    Ok(())
}

fn main() {
    if let Err(err) = run() {
        eprintln!("bench-audit: {err}");
        std::process::exit(1);
    }
}
