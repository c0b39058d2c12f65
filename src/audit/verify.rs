//! Checking an app's chain across its day files and naming the first damage.
//!
//! Every line is checked on the bytes as stored: its body hash, its MAC
//! under the audit key, its sequence number, its link to the record before
//! it, and, at each file's start, the LOG_LINK record naming the previous
//! day. The newest record is compared with the head anchor. Verification
//! stops at the first damaged record, because every later one would be
//! reported again; torn lines left by a crash are reported and skipped.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use super::AuditError;
use super::anchor::{self, Anchor, AnchorState};
use super::files::{self, AppPaths, DayFile};
use super::key::MacKey;
use super::record::{self, GENESIS_HASH, LINK_EVENT, RecordMac};

/// The kind of damage verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Damage {
    /// A record's bytes differ from what was written (its MAC does not match).
    Changed,
    /// The plain hash chain is consistent but the MACs do not match: the
    /// records were rewritten by someone without the audit key.
    Forged,
    /// A record that does not belong here: from another app's log, a second
    /// copy of a record, or appended past the head without the key.
    Inserted,
    /// Records are missing from the middle of the chain.
    Deleted,
    /// Records are out of order.
    Reordered,
    /// Records are missing at the end (the head anchor names a later one),
    /// or a day file is empty.
    Truncated,
    /// A whole day file is missing.
    DeletedFile,
    /// A line cut short by a crash during a write. Not tampering.
    Torn,
    /// The head anchor is missing although the log has records.
    MissingAnchor,
    /// The head anchor does not parse or its MAC does not match.
    AnchorChanged,
    /// A day file cannot be read or decompressed.
    Unreadable,
}

impl Damage {
    /// Returns whether this finding makes the log fail verification.
    pub fn is_damage(self) -> bool {
        self != Self::Torn
    }

    /// Returns the name printed for people.
    pub fn label(self) -> &'static str {
        match self {
            Self::Changed => "changed",
            Self::Forged => "forged",
            Self::Inserted => "inserted",
            Self::Deleted => "deleted",
            Self::Reordered => "reordered",
            Self::Truncated => "truncated",
            Self::DeletedFile => "deleted file",
            Self::Torn => "torn line",
            Self::MissingAnchor => "missing anchor",
            Self::AnchorChanged => "anchor changed",
            Self::Unreadable => "unreadable file",
        }
    }
}

/// One finding, located by file and line where it has a place.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub kind: Damage,
    /// Path relative to the audit directory, such as `mail/20261204.jsonl`.
    pub file: Option<String>,
    /// 1-based line number in the (decompressed) file.
    pub line: Option<usize>,
    /// Sequence number of the record, when it could be read.
    pub seq: Option<u64>,
    pub message: String,
}

/// The result of verifying one app.
#[derive(Debug, Clone, Serialize)]
pub struct AppVerification {
    pub app: String,
    /// No damage found (torn lines allowed).
    pub intact: bool,
    /// Records whose MAC and links checked out.
    pub records: u64,
    pub files: usize,
    /// Bytes read, after decompression.
    pub bytes: u64,
    /// Sequence number of the last good record.
    pub last_seq: Option<u64>,
    pub findings: Vec<Finding>,
}

/// Days to verify, `YYYYMMDD` inclusive on both ends.
#[derive(Debug, Clone, Default)]
pub struct DayRange {
    pub start: Option<String>,
    pub end: Option<String>,
}

impl DayRange {
    fn contains(&self, day: &str) -> bool {
        self.start.as_deref().is_none_or(|start| day >= start)
            && self.end.as_deref().is_none_or(|end| day <= end)
    }
}

/// One line of a day file, checked on its own.
#[derive(Debug)]
struct Entry {
    file: usize,
    line: usize,
    /// The line ends in `\n`.
    complete: bool,
    parsed: Option<ParsedEntry>,
}

#[derive(Debug)]
struct ParsedEntry {
    seq: u64,
    prev_hash: [u8; 32],
    /// The record's app, when it is not the app being verified.
    foreign_app: Option<String>,
    is_link: bool,
    hash: [u8; 32],
    mac_ok: bool,
    /// For LOG_LINK records: the day the record names as the previous file.
    previous_day: Option<String>,
}

/// Verifies the chain of `app`.
pub fn verify_app(
    audit_dir: &Path,
    app: &str,
    key: &MacKey,
    range: &DayRange,
) -> Result<AppVerification, AuditError> {
    let paths = AppPaths::new(audit_dir, app);

    // An app that never logged has nothing to lock or check.
    if !paths.dir.exists() && !paths.head.exists() {
        let snapshot = Snapshot {
            paths,
            anchor: AnchorState::Missing,
            days: Vec::new(),
            newest: None,
        };
        return Ok(Checker::new(app, key, range, &snapshot).finish());
    }
    let snapshot = Snapshot::take(&paths, key)?;
    let mut checker = Checker::new(app, key, range, &snapshot);
    checker.run();
    Ok(checker.finish())
}

/// Verifies every app that has a log directory or a head anchor.
pub fn verify_all(
    audit_dir: &Path,
    key: &MacKey,
    range: &DayRange,
) -> Result<Vec<AppVerification>, AuditError> {
    let apps = files::list_apps(audit_dir).map_err(|source| AuditError::Read {
        file: audit_dir.to_owned(),
        source,
    })?;
    apps.iter()
        .map(|app| verify_app(audit_dir, app, key, range))
        .collect()
}

/// The anchor, the day file list and the newest file as they were at one instant.
struct Snapshot {
    paths: AppPaths,
    anchor: AnchorState,
    days: Vec<DayFile>,
    /// Contents of the newest day file, or the error that stopped reading it.
    newest: Option<Result<Vec<u8>, String>>,
}

impl Snapshot {
    /// Reads the anchor, the file list and the newest file under the lock,
    /// so a concurrent append cannot make them disagree. The older files no
    /// longer change, so they are read one at a time after the lock is released.
    fn take(paths: &AppPaths, key: &MacKey) -> Result<Self, AuditError> {
        let lock = files::lock_app(paths)?;
        let anchor =
            anchor::read(&paths.head, &paths.app, key).map_err(|source| AuditError::Read {
                file: paths.head.clone(),
                source,
            })?;
        let days = files::list_days(&paths.dir).map_err(|source| AuditError::Read {
            file: paths.dir.clone(),
            source,
        })?;
        let newest = days
            .last()
            .map(|file| files::read_day(file).map_err(|err| err.to_string()));
        drop(lock);

        Ok(Self {
            paths: paths.clone(),
            anchor,
            days,
            newest,
        })
    }
}

/// Reads an older day file, following it to its compressed name if a
/// rotation compressed it since the listing.
fn read_stable(paths: &AppPaths, file: &DayFile) -> Result<Vec<u8>, String> {
    match files::read_day(file) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && !file.compressed => {
            let compressed = DayFile {
                day: file.day.clone(),
                path: paths.gzip(&file.day),
                compressed: true,
            };
            files::read_day(&compressed).map_err(|err| err.to_string())
        }
        other => other.map_err(|err| err.to_string()),
    }
}

struct Checker<'a> {
    app: &'a str,
    mac: RecordMac,
    range: &'a DayRange,
    anchor: &'a AnchorState,
    snapshot: &'a Snapshot,
    /// The day files in the range.
    days: Vec<&'a DayFile>,
    entries: Vec<Entry>,
    /// Sequence numbers of authentic records not yet walked, with counts.
    ahead: HashMap<u64, usize>,
    seen: HashSet<u64>,
    findings: Vec<Finding>,
    records: u64,
    bytes: u64,
    last: Option<(u64, [u8; 32], usize)>,
    damaged: bool,
}

impl<'a> Checker<'a> {
    fn new(app: &'a str, key: &'a MacKey, range: &'a DayRange, snapshot: &'a Snapshot) -> Self {
        let days = snapshot
            .days
            .iter()
            .filter(|file| range.contains(&file.day))
            .collect();
        Self {
            app,
            mac: RecordMac::new(key),
            range,
            anchor: &snapshot.anchor,
            snapshot,
            days,
            entries: Vec::new(),
            ahead: HashMap::new(),
            seen: HashSet::new(),
            findings: Vec::new(),
            records: 0,
            bytes: 0,
            last: None,
            damaged: false,
        }
    }

    fn run(&mut self) {
        if !self.parse_files() {
            return;
        }
        if !self.walk() {
            return;
        }
        self.check_anchor();
    }

    fn finish(self) -> AppVerification {
        AppVerification {
            app: self.app.to_owned(),
            intact: !self.damaged,
            records: self.records,
            files: self.days.len(),
            bytes: self.bytes,
            last_seq: self.last.map(|(seq, _, _)| seq),
            findings: self.findings,
        }
    }

    fn file_name(&self, file: usize) -> Option<String> {
        let day = self.days.get(file)?;
        let name = day.path.file_name()?.to_string_lossy();
        Some(format!("{}/{name}", self.app))
    }

    fn report(
        &mut self,
        kind: Damage,
        file: Option<usize>,
        line: Option<usize>,
        seq: Option<u64>,
        message: String,
    ) {
        let file = file.and_then(|file| self.file_name(file));
        if kind.is_damage() {
            self.damaged = true;
        }
        self.findings.push(Finding {
            kind,
            file,
            line,
            seq,
            message,
        });
    }

    /// Splits every file into checked entries; false when a file cannot be read.
    fn parse_files(&mut self) -> bool {
        for index in 0..self.days.len() {
            let is_newest = self.snapshot.days.last() == Some(self.days[index]);
            let loaded = match (&self.snapshot.newest, is_newest) {
                (Some(newest), true) => newest.as_deref().map(Cow::Borrowed).map_err(Clone::clone),
                _ => read_stable(&self.snapshot.paths, self.days[index]).map(Cow::Owned),
            };
            let content = match loaded {
                Ok(content) => content,
                Err(err) => {
                    let message = format!("cannot read the day file: {err}");
                    self.report(Damage::Unreadable, Some(index), None, None, message);
                    return false;
                }
            };
            self.bytes += content.len() as u64;

            let mut start = 0;
            let mut line_number = 0;
            while start < content.len() {
                line_number += 1;
                let (end, complete) = match memchr::memchr(b'\n', &content[start..]) {
                    Some(offset) => (start + offset, true),
                    None => (content.len(), false),
                };
                let parsed = self.parse_line(&content[start..end]);
                if let Some(parsed) = &parsed
                    && parsed.mac_ok
                {
                    *self.ahead.entry(parsed.seq).or_default() += 1;
                }
                self.entries.push(Entry {
                    file: index,
                    line: line_number,
                    complete,
                    parsed,
                });
                start = end + 1;
            }
        }
        true
    }

    fn parse_line(&self, line: &[u8]) -> Option<ParsedEntry> {
        let split = record::split_line(line)?;
        let fields = record::chain_fields(split.body)?;
        let hash = record::body_hash(split.body);
        let mac_ok = self.mac.compute(&hash) == split.mac;
        let is_link = fields.event == LINK_EVENT;
        let previous_day = if is_link {
            link_previous_day(split.body)
        } else {
            None
        };
        let foreign_app = (fields.app != self.app).then(|| fields.app.into_owned());
        Some(ParsedEntry {
            seq: fields.seq,
            prev_hash: fields.prev_hash,
            foreign_app,
            is_link,
            hash,
            mac_ok,
            previous_day,
        })
    }

    /// Walks the entries in order; false once damage is found.
    fn walk(&mut self) -> bool {
        let mut expected: Option<(u64, [u8; 32])> = if self.range.start.is_none() {
            Some((1, GENESIS_HASH))
        } else {
            None
        };
        let mut file_started = vec![false; self.days.len()];
        let mut past_anchor = false;
        let anchor_seq = match self.anchor {
            AnchorState::Valid(anchor) => Some(anchor.seq),
            _ => None,
        };

        for index in 0..self.entries.len() {
            let entry = &self.entries[index];
            let (file, line) = (entry.file, entry.line);

            let Some(parsed) = &entry.parsed else {
                if self.is_torn(index, expected) {
                    let message =
                        "line cut short by a crash during a write; not tampering".to_owned();
                    self.report(Damage::Torn, Some(file), Some(line), None, message);
                    continue;
                }
                let message = "line is not a complete audit record".to_owned();
                self.report(Damage::Changed, Some(file), Some(line), None, message);
                return false;
            };
            let seq = parsed.seq;

            if !parsed.mac_ok {
                let (kind, message) = self.classify_bad_mac(index, past_anchor);
                self.report(kind, Some(file), Some(line), Some(seq), message);
                return false;
            }
            if let Some(foreign_app) = &parsed.foreign_app {
                let message = format!("record belongs to the log of app {foreign_app:?}");
                self.report(Damage::Inserted, Some(file), Some(line), Some(seq), message);
                return false;
            }

            if !file_started[file] {
                file_started[file] = true;
                if let Some((kind, message)) = self.check_link(file, parsed) {
                    self.report(kind, Some(file), Some(line), Some(seq), message);
                    return false;
                }
            }

            if let Some((expected_seq, expected_prev)) = expected
                && let Some((kind, message)) =
                    self.classify_out_of_place(parsed, expected_seq, &expected_prev)
            {
                self.report(kind, Some(file), Some(line), Some(seq), message);
                return false;
            }

            expected = Some((seq + 1, parsed.hash));
            self.seen.insert(seq);
            if let Some(count) = self.ahead.get_mut(&seq) {
                *count = count.saturating_sub(1);
            }
            if anchor_seq == Some(seq) {
                past_anchor = true;
            }
            self.records += 1;
            self.last = Some((seq, parsed.hash, index));
        }

        for (file, started) in file_started.iter().enumerate() {
            let is_newest = file + 1 == self.days.len();
            if !started && !is_newest {
                self.report(
                    Damage::Truncated,
                    Some(file),
                    None,
                    None,
                    "day file has no records".to_owned(),
                );
                return false;
            }
        }
        true
    }

    /// Decides whether a line that is not a record is torn: the file's
    /// unterminated last line, or a line the next record skips over in the chain.
    fn is_torn(&self, index: usize, expected: Option<(u64, [u8; 32])>) -> bool {
        let entry = &self.entries[index];
        let next = self
            .entries
            .get(index + 1)
            .filter(|next| next.file == entry.file);
        let Some(next) = next else {
            return !entry.complete;
        };
        let Some(next) = &next.parsed else {
            return false;
        };
        match expected {
            Some((seq, prev)) => next.mac_ok && next.seq == seq && next.prev_hash == prev,
            None => next.mac_ok,
        }
    }

    fn classify_bad_mac(&self, index: usize, past_anchor: bool) -> (Damage, String) {
        let Some(parsed) = &self.entries[index].parsed else {
            return (
                Damage::Changed,
                "line is not a complete audit record".to_owned(),
            );
        };
        if past_anchor {
            let message = "record after the head anchor has a MAC that does not match: it was appended without the audit key";
            return (Damage::Inserted, message.to_owned());
        }

        let next_links = match self
            .entries
            .get(index + 1)
            .and_then(|next| next.parsed.as_ref())
        {
            Some(next) => next.prev_hash == parsed.hash,
            None => match self.anchor {
                AnchorState::Valid(anchor) => anchor.hash_bytes() == Some(parsed.hash),
                _ => false,
            },
        };
        if next_links && index + 1 < self.entries.len() {
            let message = "the hash chain is consistent but the MAC does not match: the records were rewritten without the audit key";
            return (Damage::Forged, message.to_owned());
        }
        (
            Damage::Changed,
            "the record's MAC does not match its bytes: it was changed after it was written"
                .to_owned(),
        )
    }

    fn classify_out_of_place(
        &self,
        parsed: &ParsedEntry,
        expected_seq: u64,
        expected_prev: &[u8; 32],
    ) -> Option<(Damage, String)> {
        let seq = parsed.seq;
        if seq == expected_seq {
            if parsed.prev_hash == *expected_prev {
                return None;
            }
            let message = format!("record {seq} does not link to the record before it");
            return Some((Damage::Inserted, message));
        }

        let expected_is_ahead = self
            .ahead
            .get(&expected_seq)
            .is_some_and(|count| *count > 0);
        if seq > expected_seq && expected_is_ahead {
            return Some((
                Damage::Reordered,
                format!("record {seq} comes before record {expected_seq}"),
            ));
        }
        if seq > expected_seq {
            let message = if seq == expected_seq + 1 {
                format!("record {expected_seq} is missing")
            } else {
                format!("records {expected_seq} to {} are missing", seq - 1)
            };
            return Some((Damage::Deleted, message));
        }
        if self.seen.contains(&seq) {
            return Some((Damage::Inserted, format!("a second copy of record {seq}")));
        }
        Some((
            Damage::Reordered,
            format!("record {seq} comes after record {}", expected_seq - 1),
        ))
    }

    /// Checks that a file opens with the LOG_LINK record naming the previous day file.
    fn check_link(&self, file: usize, parsed: &ParsedEntry) -> Option<(Damage, String)> {
        if !parsed.is_link {
            return Some((
                Damage::Deleted,
                "the day file does not start with its LOG_LINK record".to_owned(),
            ));
        }
        let listed_previous = file
            .checked_sub(1)
            .map(|previous| self.days[previous].day.as_str());
        let named = parsed.previous_day.as_deref();
        if named == listed_previous {
            return None;
        }
        if file == 0 && self.range.start.is_some() {
            return None;
        }
        match named {
            Some(day) => Some((
                Damage::DeletedFile,
                format!(
                    "the day file {}/{day}.jsonl(.gz) that this file links to is missing",
                    self.app
                ),
            )),
            None => Some((
                Damage::Inserted,
                "the day file claims to start the chain but older day files exist".to_owned(),
            )),
        }
    }

    /// Compares the end of the chain with the head anchor.
    fn check_anchor(&mut self) {
        let anchor: &Anchor = match self.anchor {
            AnchorState::Valid(anchor) => anchor,
            AnchorState::Missing => {
                if self.records > 0 {
                    let message = format!("the head anchor {}.head is missing", self.app);
                    self.report(Damage::MissingAnchor, None, None, None, message);
                }
                return;
            }
            AnchorState::Invalid(reason) => {
                let message = format!("the head anchor {}.head is invalid: {reason}", self.app);
                self.report(Damage::AnchorChanged, None, None, None, message);
                return;
            }
        };
        if self
            .range
            .end
            .as_deref()
            .is_some_and(|end| anchor.day.as_str() > end)
        {
            return;
        }

        if !self.days.iter().any(|file| file.day == anchor.day) {
            let message = format!(
                "the day file {}/{}.jsonl that holds record {} is missing",
                self.app, anchor.day, anchor.seq
            );
            self.report(Damage::DeletedFile, None, None, Some(anchor.seq), message);
            return;
        }

        let (last_seq, last_hash, last_index) = match self.last {
            Some(last) => last,
            None => (0, GENESIS_HASH, usize::MAX),
        };
        let (file, line) = match self.entries.get(last_index) {
            Some(entry) => (Some(entry.file), Some(entry.line + 1)),
            None => (self.days.len().checked_sub(1), Some(1)),
        };
        if last_seq < anchor.seq {
            let message = format!(
                "the log ends at record {last_seq} but the head anchor names record {}: the tail was cut off",
                anchor.seq
            );
            self.report(Damage::Truncated, file, line, Some(last_seq + 1), message);
        } else if last_seq == anchor.seq && anchor.hash_bytes() != Some(last_hash) {
            let message = format!("record {last_seq} differs from the one the head anchor names");
            self.report(
                Damage::Changed,
                file,
                line.map(|line| line - 1),
                Some(last_seq),
                message,
            );
        }
    }
}

/// Reads `details.previous_day` from a LOG_LINK record body.
fn link_previous_day(body: &[u8]) -> Option<String> {
    let mut object = body.to_vec();
    object.push(b'}');
    let value: serde_json::Value = serde_json::from_slice(&object).ok()?;
    value
        .get("details")?
        .get("previous_day")?
        .as_str()
        .map(str::to_owned)
}
