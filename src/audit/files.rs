//! The paths of an app's audit files, and reading them back.
//!
//! Layout under `<vault>/audit/`: `<app>/YYYYMMDD.jsonl` (today and any
//! day not yet rotated), `<app>/YYYYMMDD.jsonl.gz` (older days),
//! `<app>.head` (the head anchor), `<app>.lock` (the writers' lock) and
//! `critical_events.log`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use nix::fcntl::{Flock, FlockArg};

use super::AuditError;

/// Suffix of an uncompressed day file.
pub const PLAIN_SUFFIX: &str = ".jsonl";
/// Suffix of a compressed day file.
pub const GZIP_SUFFIX: &str = ".jsonl.gz";

/// The files of one app's log.
#[derive(Debug, Clone)]
pub struct AppPaths {
    pub app: String,
    /// Directory of the day files.
    pub dir: PathBuf,
    /// The head anchor.
    pub head: PathBuf,
    /// The lock every writer and the rotation take.
    pub lock: PathBuf,
}

impl AppPaths {
    /// Returns the paths of `app`'s log under `audit_dir`.
    pub fn new(audit_dir: &Path, app: &str) -> Self {
        Self {
            app: app.to_owned(),
            dir: audit_dir.join(app),
            head: audit_dir.join(format!("{app}.head")),
            lock: audit_dir.join(format!("{app}.lock")),
        }
    }

    /// Returns the uncompressed file of `day`.
    pub fn plain(&self, day: &str) -> PathBuf {
        self.dir.join(format!("{day}{PLAIN_SUFFIX}"))
    }

    /// Returns the compressed file of `day`.
    pub fn gzip(&self, day: &str) -> PathBuf {
        self.dir.join(format!("{day}{GZIP_SUFFIX}"))
    }
}

/// One day file of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayFile {
    /// `YYYYMMDD`.
    pub day: String,
    pub path: PathBuf,
    pub compressed: bool,
}

/// Lists an app's day files, oldest first. When a day exists both
/// uncompressed and compressed (a rotation stopped between writing the
/// compressed copy and removing the original), the uncompressed one is listed.
pub fn list_days(dir: &Path) -> std::io::Result<Vec<DayFile>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut days: Vec<DayFile> = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let (day, compressed) = if let Some(day) = name.strip_suffix(GZIP_SUFFIX) {
            (day, true)
        } else if let Some(day) = name.strip_suffix(PLAIN_SUFFIX) {
            (day, false)
        } else {
            continue;
        };
        if !is_day(day) {
            continue;
        }
        days.push(DayFile {
            day: day.to_owned(),
            path: entry.path(),
            compressed,
        });
    }
    days.sort_by(|a, b| a.day.cmp(&b.day).then(a.compressed.cmp(&b.compressed)));
    days.dedup_by(|later, earlier| later.day == earlier.day);
    Ok(days)
}

/// Returns whether `text` is a `YYYYMMDD` day stem.
pub fn is_day(text: &str) -> bool {
    text.len() == 8 && text.bytes().all(|b| b.is_ascii_digit())
}

/// Lists the apps that have a log directory or a head anchor, sorted.
pub fn list_apps(audit_dir: &Path) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(audit_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut apps = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(app) = name.strip_suffix(".head") {
            apps.push(app.to_owned());
        } else if entry.file_type()?.is_dir() && !name.starts_with('.') {
            apps.push(name.to_owned());
        }
    }
    apps.sort();
    apps.dedup();
    Ok(apps)
}

/// Reads a whole day file, decompressing it when needed.
pub fn read_day(file: &DayFile) -> std::io::Result<Vec<u8>> {
    let raw = File::open(&file.path)?;
    let mut content = Vec::new();
    if file.compressed {
        MultiGzDecoder::new(raw).read_to_end(&mut content)?;
    } else {
        let mut raw = raw;
        raw.read_to_end(&mut content)?;
    }
    Ok(content)
}

/// Creates `dir` (and its parents) with mode 0700 from the start.
pub fn create_private_dir(dir: &Path) -> Result<(), AuditError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| AuditError::CreateDir {
            dir: dir.to_owned(),
            source,
        })
}

/// Opens `path` for appending, creating it with mode 0600.
pub fn open_append(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| AuditError::Open {
            file: path.to_owned(),
            source,
        })
}

/// Takes the exclusive lock of an app's log; it is released when the guard drops.
pub fn lock_app(paths: &AppPaths) -> Result<Flock<File>, AuditError> {
    crate::lockfile::lock(&paths.lock, FlockArg::LockExclusive).map_err(|err| match err {
        crate::lockfile::LockError::Open(source) => AuditError::Open {
            file: paths.lock.clone(),
            source,
        },
        crate::lockfile::LockError::Lock(source) => AuditError::Lock {
            file: paths.lock.clone(),
            source,
        },
    })
}

/// The end of a day file, as a writer needs it.
#[derive(Debug, Default)]
pub struct FileTail {
    /// The last line that ends in `\n`, without the `\n`.
    pub last_line: Option<Vec<u8>>,
    /// The file ends in bytes that are not followed by `\n`.
    pub torn: bool,
}

/// Reads the last whole line of `file` by scanning backwards from its end.
pub fn read_tail(file: &mut File) -> std::io::Result<FileTail> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(FileTail::default());
    }

    // Read backwards, doubling the chunk, until the buffer contains the newline
    // before the last whole line.
    let mut chunk_size: u64 = 16 * 1024;
    let mut buffer: Vec<u8> = Vec::new();
    let mut start = len;
    loop {
        let step = chunk_size.min(start);
        chunk_size = chunk_size.saturating_mul(2);
        start -= step;
        let mut chunk = vec![0u8; usize::try_from(step).unwrap_or(usize::MAX)];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buffer);
        buffer = chunk;

        let torn = buffer.last() != Some(&b'\n');
        if let Some(end) = buffer.iter().rposition(|&b| b == b'\n') {
            if let Some(line_start) = buffer[..end].iter().rposition(|&b| b == b'\n') {
                return Ok(FileTail {
                    last_line: Some(buffer[line_start + 1..end].to_vec()),
                    torn,
                });
            }
            if start == 0 {
                return Ok(FileTail {
                    last_line: Some(buffer[..end].to_vec()),
                    torn,
                });
            }
        } else if start == 0 {
            return Ok(FileTail {
                last_line: None,
                torn,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tail_of(content: &[u8]) -> FileTail {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(content).unwrap();
        read_tail(&mut file).unwrap()
    }

    #[test]
    fn tail_finds_last_whole_line() {
        let tail = tail_of(b"one\ntwo\n");
        assert_eq!(tail.last_line.as_deref(), Some(&b"two"[..]));
        assert!(!tail.torn);
    }

    #[test]
    fn tail_skips_torn_fragment() {
        let tail = tail_of(b"one\ntwo\nthr");
        assert_eq!(tail.last_line.as_deref(), Some(&b"two"[..]));
        assert!(tail.torn);
    }

    #[test]
    fn tail_of_single_torn_fragment() {
        let tail = tail_of(b"thr");
        assert!(tail.last_line.is_none());
        assert!(tail.torn);
    }

    #[test]
    fn tail_reads_lines_longer_than_chunk() {
        let long = vec![b'x'; 200 * 1024];
        let mut content = b"first\n".to_vec();
        content.extend_from_slice(&long);
        content.push(b'\n');
        let tail = tail_of(&content);
        assert_eq!(tail.last_line.unwrap().len(), long.len());
    }

    #[test]
    fn list_days_prefers_plain_copy() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "20261201.jsonl.gz",
            "20261201.jsonl",
            "20261202.jsonl",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let days = list_days(dir.path()).unwrap();
        assert_eq!(days.len(), 2);
        assert!(!days[0].compressed);
        assert_eq!(days[1].day, "20261202");
    }
}
