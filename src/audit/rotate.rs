//! Compressing the day files of earlier days with gzip.
//!
//! The writer compresses them when it opens a new day's file, and
//! `audit rotate` does it for every app. A file is compressed to a
//! temporary name, fsynced, renamed to `YYYYMMDD.jsonl.gz` and only then
//! is the original removed, so a crash leaves one complete copy or two.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use super::AuditError;
use super::files::{AppPaths, list_days, lock_app};

/// Compresses every uncompressed day file of the app older than `day`.
/// The caller holds the app's lock. Returns the files written.
pub fn compress_before(paths: &AppPaths, day: &str) -> Result<Vec<PathBuf>, AuditError> {
    let days = list_days(&paths.dir).map_err(|source| AuditError::Read {
        file: paths.dir.clone(),
        source,
    })?;
    let mut written = Vec::new();
    for file in days
        .iter()
        .filter(|file| !file.compressed && file.day.as_str() < day)
    {
        let target = paths.gzip(&file.day);
        compress_file(&file.path, &target)?;
        written.push(target);
    }
    Ok(written)
}

/// Compresses the earlier days of `app`, taking its lock.
pub fn rotate_app(audit_dir: &Path, app: &str, today: &str) -> Result<Vec<PathBuf>, AuditError> {
    let paths = AppPaths::new(audit_dir, app);
    let _lock = lock_app(&paths)?;
    compress_before(&paths, today)
}

fn compress_file(source: &Path, target: &Path) -> Result<(), AuditError> {
    let content = std::fs::read(source).map_err(|err| AuditError::Read {
        file: source.to_owned(),
        source: err,
    })?;
    let temporary = target.with_extension("gz.tmp");
    let write_error = |err: std::io::Error| AuditError::Write {
        file: temporary.clone(),
        source: err,
    };

    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&temporary)
        .map_err(write_error)?;
    let mut encoder = GzEncoder::new(file, Compression::default());
    encoder.write_all(&content).map_err(write_error)?;
    let file = encoder.finish().map_err(write_error)?;
    file.sync_all().map_err(write_error)?;

    std::fs::rename(&temporary, target).map_err(|err| AuditError::Write {
        file: target.to_owned(),
        source: err,
    })?;
    sync_dir(target);
    std::fs::remove_file(source).map_err(|err| AuditError::Write {
        file: source.to_owned(),
        source: err,
    })?;
    tracing::info!(file = %target.display(), "compressed audit day file");
    Ok(())
}

/// Fsyncs the directory holding `path`, so a rename or a new file survives a crash.
pub fn sync_dir(path: &Path) {
    let Some(dir) = path.parent() else { return };
    if let Err(err) = std::fs::File::open(dir).and_then(|dir| dir.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %err, "failed to fsync audit directory");
    }
}
