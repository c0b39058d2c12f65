//! `audit tail`: the newest records, then (with `-f`) new records as they
//! are appended, across the change to a new day file.
//!
//! Following polls the newest day file of each app. It keeps the open file
//! when a rotation compresses and removes the path, reads it to its end, and
//! then moves on to the next day's file, so no record is skipped. Only
//! whole lines are printed; a torn fragment is held back until it is
//! completed or passed over.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use super::files::{self, DayFile};
use super::record::{LINK_EVENT, Record};
use super::search::{self, Query, format_line};
use super::{AuditError, validate_app};

/// How often a followed log is checked for new records.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Prints the last `lines` records of `app` (every app when `None`) to `out`,
/// then, with `follow`, keeps printing new records until `stop` returns true
/// or writing to `out` fails.
pub fn tail(
    audit_dir: &Path,
    app: Option<&str>,
    lines: usize,
    follow: bool,
    out: &mut dyn Write,
    stop: &dyn Fn() -> bool,
) -> Result<(), AuditError> {
    if let Some(app) = app {
        validate_app(app)?;
    }

    // Record where each app's newest file ends now, so following starts exactly there.
    let mut followers: BTreeMap<String, Follower> = BTreeMap::new();
    if follow {
        for app in apps(audit_dir, app)? {
            let follower = Follower::at_end(audit_dir, &app)?;
            followers.insert(app, follower);
        }
    }

    let query = Query {
        app: app.map(str::to_owned),
        limit: Some(lines),
        ..Query::default()
    };
    let mut records = search::search(audit_dir, &query)?;
    records.reverse();
    for record in &records {
        if writeln!(out, "{}", format_line(record)).is_err() {
            return Ok(());
        }
    }
    let _ = out.flush();

    while follow && !stop() {
        for name in apps(audit_dir, app)? {
            if !followers.contains_key(&name) {
                followers.insert(name.clone(), Follower::at_start(audit_dir, &name));
            }
        }
        for follower in followers.values_mut() {
            for record in follower.poll()? {
                if writeln!(out, "{}", format_line(&record)).is_err() {
                    return Ok(());
                }
            }
        }
        if out.flush().is_err() {
            return Ok(());
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    Ok(())
}

fn apps(audit_dir: &Path, app: Option<&str>) -> Result<Vec<String>, AuditError> {
    match app {
        Some(app) => Ok(vec![app.to_owned()]),
        None => files::list_apps(audit_dir).map_err(|source| AuditError::Read {
            file: audit_dir.to_owned(),
            source,
        }),
    }
}

/// The read position in one app's newest day file.
struct Follower {
    dir: std::path::PathBuf,
    /// The day being read and its open file.
    current: Option<(String, File)>,
    /// Bytes read after the last `\n`.
    pending: Vec<u8>,
}

impl Follower {
    fn at_end(audit_dir: &Path, app: &str) -> Result<Self, AuditError> {
        let mut follower = Self::at_start(audit_dir, app);
        let days = files::list_days(&follower.dir).map_err(|source| AuditError::Read {
            file: follower.dir.clone(),
            source,
        })?;
        if let Some(newest) = days.last().filter(|file| !file.compressed)
            && let Ok(mut file) = File::open(&newest.path)
        {
            let _ = file.seek(SeekFrom::End(0));
            follower.current = Some((newest.day.clone(), file));
        }
        Ok(follower)
    }

    fn at_start(audit_dir: &Path, app: &str) -> Self {
        Self {
            dir: audit_dir.join(app),
            current: None,
            pending: Vec::new(),
        }
    }

    /// Returns the records appended since the last poll.
    fn poll(&mut self) -> Result<Vec<Record>, AuditError> {
        let mut records = Vec::new();
        loop {
            self.read_current(&mut records);
            let days = files::list_days(&self.dir).map_err(|source| AuditError::Read {
                file: self.dir.clone(),
                source,
            })?;
            let next = match &self.current {
                Some((day, _)) => days.iter().find(|file| file.day > *day).cloned(),
                None => days.iter().rfind(|file| !file.compressed).cloned(),
            };
            let Some(next) = next else {
                return Ok(records);
            };
            if !self.open(&next) {
                return Ok(records);
            }
        }
    }

    fn open(&mut self, file: &DayFile) -> bool {
        if file.compressed {
            // A whole day went by between two polls: print it from the compressed copy.
            self.current = None;
            return false;
        }
        match File::open(&file.path) {
            Ok(handle) => {
                self.pending.clear();
                self.current = Some((file.day.clone(), handle));
                true
            }
            Err(_) => false,
        }
    }

    fn read_current(&mut self, records: &mut Vec<Record>) {
        let Some((_, file)) = &mut self.current else {
            return;
        };
        let mut buffer = Vec::new();
        if file.read_to_end(&mut buffer).is_err() {
            return;
        }
        self.pending.extend_from_slice(&buffer);
        let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let complete: Vec<u8> = self.pending.drain(..=end).collect();
        for line in complete.split(|&b| b == b'\n') {
            if let Ok(record) = serde_json::from_slice::<Record>(line)
                && record.event != LINK_EVENT
            {
                records.push(record);
            }
        }
    }
}
