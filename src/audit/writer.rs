//! Appending records: the lock, the day file, the link record, the anchor
//! and the fan-out of CRITICAL records.
//!
//! Each append takes the app's lock and finds the last record: the newest
//! day file's last whole line, else the anchor. It writes the new line with
//! one `write` call, after a `\n` when the file ends in a torn line and after
//! a link record when it starts a new day file. Then it replaces the anchor
//! and releases the lock.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::alert::{self, Priority};
use super::anchor::{self, Anchor, AnchorState};
use super::clock::{Clock, SystemClock, day_of};
use super::config::{self, AuditConfig};
use super::files::{self, AppPaths, DayFile};
use super::key::{self, MacKey};
use super::record::{self, Actor, GENESIS_HASH, LINK_EVENT, Level, RecordBody};
use super::rotate;
use super::{AuditError, validate_app};
use crate::context::Context;

/// Event type of the record written when an alert command fails.
pub const ALERT_FAILED_EVENT: &str = "ALERT_FAILED";

/// Longest accepted event type.
const MAX_EVENT_LEN: usize = 64;

/// The log of one app, for the records of one run.
///
/// Dropping it waits for alert commands still running (each is bounded by
/// `audit.alert_timeout_secs`), so their failures reach the log.
#[derive(Debug)]
pub struct AuditLog {
    writer: Arc<Writer>,
    alerts: Mutex<Vec<JoinHandle<()>>>,
    /// `sync` flushes to disk: the configuration asks for durable records
    /// and `deferring_sync` moved the fsync from each append to `sync`.
    deferred_sync: bool,
}

#[derive(Debug, Clone)]
struct Writer {
    audit_dir: PathBuf,
    paths: AppPaths,
    run_id: String,
    key: MacKey,
    clock: Arc<dyn Clock>,
    config: AuditConfig,
    /// An append started a new day file whose directory entry has not been
    /// flushed since: a deferred sync flushes the directory too.
    new_file: Arc<std::sync::atomic::AtomicBool>,
}

/// The end of the chain before an append.
struct ChainHead {
    seq: u64,
    hash: [u8; 32],
    /// The newest day file, if any.
    latest: Option<DayFile>,
    /// The newest file ends in a line without `\n`.
    torn: bool,
    /// The newest file has at least one whole line.
    has_line: bool,
    /// The day of the file before the newest one.
    before_latest: Option<String>,
    /// The newest file, open for appending, when it is uncompressed.
    open_file: Option<std::fs::File>,
}

impl AuditLog {
    /// Opens (creating if needed) the log of `app` with the key from the vault.
    ///
    /// Fails with exit code 77 when the vault is not initialised, with a
    /// message that names `safe-exec init` as the fix. Other vault errors
    /// keep their own exit codes.
    pub fn open(context: &Context, app: &str, run_id: &str) -> Result<Self, AuditError> {
        let key = key::mac_key(context)?;
        Self::open_with_key(context, app, run_id, key)
    }

    /// Opens (creating if needed) the log of `app` with an explicit key.
    pub fn open_with_key(
        context: &Context,
        app: &str,
        run_id: &str,
        key: MacKey,
    ) -> Result<Self, AuditError> {
        validate_app(app)?;
        let config = config::load(&context.vault_dir)?;
        let audit_dir = context.audit_dir();
        files::create_private_dir(&context.vault_dir)?;
        files::create_private_dir(&audit_dir)?;
        let paths = AppPaths::new(&audit_dir, app);
        files::create_private_dir(&paths.dir)?;

        let writer = Writer {
            audit_dir,
            paths,
            run_id: run_id.to_owned(),
            key,
            clock: Arc::new(SystemClock),
            config,
            new_file: Arc::default(),
        };
        Ok(Self {
            writer: Arc::new(writer),
            alerts: Mutex::new(Vec::new()),
            deferred_sync: false,
        })
    }

    /// Returns another handle on the same log and key for a component that
    /// appends its own records (the request channel). Its appends are synced
    /// one by one as configured, even when this handle defers its syncs.
    pub fn handle(&self) -> Self {
        let mut writer = (*self.writer).clone();
        writer.config.fsync = self.writer.config.fsync || self.deferred_sync;
        Self {
            writer: Arc::new(writer),
            alerts: Mutex::new(Vec::new()),
            deferred_sync: false,
        }
    }

    /// Replaces the clock that stamps records and picks the day file.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        self.rebuild(|writer| writer.clock = clock)
    }

    /// Sets whether each record and anchor update is fsynced before `append`
    /// returns (default: `audit.fsync` in the configuration, true when unset).
    pub fn with_fsync(self, fsync: bool) -> Self {
        self.rebuild(|writer| writer.config.fsync = fsync)
    }

    /// Moves the fsync from every append to explicit `sync` calls, so a
    /// caller that writes several records in a row waits for the disk once.
    /// Does nothing when the configuration turns fsync off.
    pub fn deferring_sync(self) -> Self {
        let durable = self.writer.config.fsync;
        let mut log = self.with_fsync(false);
        log.deferred_sync = durable;
        log
    }

    /// Flushes the records appended so far and the head anchor to disk
    /// (with `deferring_sync`; otherwise every append already did).
    pub fn sync(&self) -> Result<(), AuditError> {
        self.sync_records()?;
        self.sync_anchor()
    }

    /// Flushes the records appended so far, but not the head anchor.
    ///
    /// Until `sync_anchor`, the anchor on disk may be behind the log. Verification
    /// accepts that when the records after the anchor carry valid MACs, so after
    /// a crash only a truncation back to that older anchor would go unnoticed.
    pub fn sync_records(&self) -> Result<(), AuditError> {
        if self.deferred_sync {
            self.writer.sync_records()?;
        }
        Ok(())
    }

    /// Flushes the head anchor. Call it after `sync_records`: an anchor on
    /// disk that names records the disk does not have reads as truncation.
    pub fn sync_anchor(&self) -> Result<(), AuditError> {
        if self.deferred_sync {
            self.writer.sync_anchor()?;
        }
        Ok(())
    }

    /// Starts `sync` on a thread of its own, so the caller can go on while
    /// the disk works. The thread flushes the newest day file (and its
    /// directory when the file is new), reports that through
    /// [`PendingSync::wait_records`], then flushes the anchor. The files are
    /// opened here.
    pub fn sync_in_background(&self) -> PendingSync {
        if !self.deferred_sync {
            return PendingSync::done(Ok(()));
        }
        let opened = self
            .writer
            .record_files()
            .and_then(|records| Ok((records, self.writer.anchor_file()?)));
        let (records, anchor) = match opened {
            Ok(files) => files,
            Err(err) => return PendingSync::done(Err(err)),
        };
        let (report, reported) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("audit-sync".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                // The supervisor's signalfd receives a signal only while every thread blocks it.
                let _ = nix::sys::signal::SigSet::all().thread_block();
                let flushed = records.into_iter().try_for_each(flush);
                let failed = flushed.is_err();
                let _ = report.send(flushed);
                // An anchor on disk that names records the disk lacks reads as truncation.
                if failed {
                    return Ok(());
                }
                anchor.map_or(Ok(()), flush)
            });
        match thread {
            Ok(thread) => PendingSync {
                records: Some(reported),
                thread: Some(thread),
                result: Ok(()),
            },
            // No thread to spare: flush here instead.
            Err(_) => PendingSync::done(self.sync()),
        }
    }

    fn rebuild(self, change: impl FnOnce(&mut Writer)) -> Self {
        let mut writer = (*self.writer).clone();
        change(&mut writer);
        Self {
            writer: Arc::new(writer),
            alerts: Mutex::new(Vec::new()),
            deferred_sync: self.deferred_sync,
        }
    }

    /// Returns the run id stamped on every record.
    pub fn run_id(&self) -> &str {
        &self.writer.run_id
    }

    /// Returns the app whose log this is.
    pub fn app(&self) -> &str {
        &self.writer.paths.app
    }

    /// Appends one record and returns its sequence number.
    ///
    /// A CRITICAL record is also copied to `critical_events.log`, sent to
    /// syslog and handed to the alert command, none of which can fail the append.
    pub fn append(
        &self,
        event: &str,
        level: Level,
        actor: Actor,
        details: serde_json::Value,
    ) -> Result<u64, AuditError> {
        validate_event(event)?;
        let written = self.writer.append(event, level, actor, &details)?;
        self.after_append(event, level, &written);
        Ok(written.seq)
    }

    /// Copies a CRITICAL record out and sends the head of a RUN_END to syslog.
    fn after_append(&self, event: &str, level: Level, written: &Written) {
        if level == Level::Critical {
            self.fan_out_critical(&written.line);
        }
        if event == "RUN_END" && self.writer.config.syslog_head {
            let message = format!(
                "audit head app={} seq={} hash={} run_id={}",
                self.app(),
                written.seq,
                hex::encode(written.hash),
                self.run_id()
            );
            alert::syslog(Priority::Info, &message);
        }
    }

    /// Appends `records` in order, as `append` does each, but under one lock
    /// and with one `write` call; returns their sequence numbers. Nothing is
    /// written when one of them is invalid.
    pub fn append_all(
        &self,
        records: &[(&str, Level, Actor, serde_json::Value)],
    ) -> Result<Vec<u64>, AuditError> {
        for (event, ..) in records {
            validate_event(event)?;
        }
        let pending: Vec<_> = records
            .iter()
            .map(|(event, level, actor, details)| (*event, *level, *actor, details))
            .collect();
        let written = self.writer.append_all(&pending)?;
        for ((event, level, ..), written) in records.iter().zip(&written) {
            self.after_append(event, *level, written);
        }
        Ok(written.iter().map(|written| written.seq).collect())
    }

    /// Waits for alert commands still running.
    pub fn wait_for_alerts(&self) {
        let handles = match self.alerts.lock() {
            Ok(mut handles) => std::mem::take(&mut *handles),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for handle in handles {
            if handle.join().is_err() {
                tracing::error!(app = %self.app(), "alert command thread panicked");
            }
        }
    }

    fn fan_out_critical(&self, line: &[u8]) {
        let app = self.app();
        if let Err(err) = alert::append_critical_log(&self.writer.audit_dir, line) {
            tracing::error!(app, error = %err, "failed to copy CRITICAL record to critical_events.log");
        }
        if self.writer.config.syslog {
            alert::syslog(
                Priority::Critical,
                &String::from_utf8_lossy(line.trim_ascii_end()),
            );
        }
        let Some(command) = self.writer.config.alert_command.clone() else {
            return;
        };

        let writer = Arc::clone(&self.writer);
        let line = line.to_vec();
        let handle = std::thread::spawn(move || {
            let timeout = Duration::from_secs(writer.config.alert_timeout_secs);
            let Err(reason) = alert::run_alert_command(&command, &writer.paths.app, &line, timeout)
            else {
                return;
            };
            tracing::warn!(app = %writer.paths.app, run_id = %writer.run_id, reason, "alert command failed");
            let details = serde_json::json!({ "command": command, "reason": reason });
            if let Err(err) = writer.append(
                ALERT_FAILED_EVENT,
                Level::Warning,
                Actor::Supervisor,
                &details,
            ) {
                tracing::error!(app = %writer.paths.app, error = %err, "failed to record the failed alert command");
            }
        });
        match self.alerts.lock() {
            Ok(mut handles) => handles.push(handle),
            Err(poisoned) => poisoned.into_inner().push(handle),
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.wait_for_alerts();
    }
}

/// A record as it was written.
struct Written {
    seq: u64,
    hash: [u8; 32],
    line: Vec<u8>,
}

impl Writer {
    fn append(
        &self,
        event: &str,
        level: Level,
        actor: Actor,
        details: &serde_json::Value,
    ) -> Result<Written, AuditError> {
        let mut written = self.append_all(&[(event, level, actor, details)])?;
        written.pop().ok_or_else(|| AuditError::Write {
            file: self.paths.dir.clone(),
            source: std::io::Error::other("no record was written"),
        })
    }

    /// Appends `records` in order under one lock, with one `write` call.
    fn append_all(
        &self,
        records: &[(&str, Level, Actor, &serde_json::Value)],
    ) -> Result<Vec<Written>, AuditError> {
        let app = self.paths.app.as_str();
        let _lock = files::lock_app(&self.paths)?;

        let now = self.clock.now();
        let head = self.read_head()?;

        // Never write into a day before the newest file, even if the clock went back.
        let mut day = day_of(now);
        let mut continuing = false;
        if let Some(latest) = &head.latest {
            if latest.day >= day && !latest.compressed {
                day = latest.day.clone();
                continuing = true;
            } else if latest.day >= day {
                // NOTE: the newest day is already compressed although the clock
                // has not passed it, so the record goes to the following day's file.
                day = next_day(&latest.day);
            }
        }
        let ts = now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);

        let mut out = Vec::new();
        let mut seq = head.seq;
        let mut prev = head.hash;
        if continuing && head.torn {
            out.push(b'\n');
        }

        // A new file starts with its link record, and so does a file that a
        // crash left with nothing but a torn first write.
        if !continuing || !head.has_line {
            let previous_day = if continuing {
                head.before_latest.clone()
            } else {
                head.latest.as_ref().map(|latest| latest.day.clone())
            };
            let link_details = serde_json::json!({ "previous_day": previous_day });
            seq += 1;
            let link = self.encode(
                seq,
                &ts,
                LINK_EVENT,
                Level::Info,
                Actor::Supervisor,
                &link_details,
                &prev,
            )?;
            out.extend_from_slice(&link.bytes);
            prev = link.hash;
        }
        let mut written = Vec::with_capacity(records.len());
        for &(event, level, actor, details) in records {
            seq += 1;
            let line = self.encode(seq, &ts, event, level, actor, details, &prev)?;
            out.extend_from_slice(&line.bytes);
            prev = line.hash;
            written.push(Written {
                seq,
                hash: line.hash,
                line: line.bytes,
            });
        }
        let Some(last) = written.last() else {
            return Ok(written);
        };

        let path = self.paths.plain(&day);
        let mut file = match head.open_file {
            Some(file) if continuing => file,
            _ => files::open_append(&path)?,
        };
        file.write_all(&out).map_err(|source| AuditError::Write {
            file: path.clone(),
            source,
        })?;
        if self.config.fsync {
            file.sync_data().map_err(|source| AuditError::Write {
                file: path.clone(),
                source,
            })?;
            if !continuing {
                rotate::sync_dir(&path);
            }
        } else if !continuing {
            self.new_file
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }

        let anchor = Anchor::new(app, last.seq, &last.hash, &day, &self.key);
        anchor::write(&self.paths.head, &anchor, self.config.fsync).map_err(|source| {
            AuditError::Write {
                file: self.paths.head.clone(),
                source,
            }
        })?;

        if !continuing && let Err(err) = rotate::compress_before(&self.paths, &day) {
            tracing::warn!(app, error = %err, "failed to compress earlier audit day files");
        }
        tracing::debug!(app, run_id = %self.run_id, records = written.len(), seq, "audit records written");
        Ok(written)
    }

    #[allow(clippy::too_many_arguments)]
    fn encode(
        &self,
        seq: u64,
        ts: &str,
        event: &str,
        level: Level,
        actor: Actor,
        details: &serde_json::Value,
        prev: &[u8; 32],
    ) -> Result<record::EncodedLine, AuditError> {
        let body = RecordBody {
            seq,
            ts: ts.to_owned(),
            app: &self.paths.app,
            run_id: &self.run_id,
            event,
            level,
            actor,
            details,
            prev_hash: hex::encode(prev),
        };
        record::encode(&body, &self.key).map_err(|source| AuditError::Encode {
            app: self.paths.app.clone(),
            source,
        })
    }

    fn sync_records(&self) -> Result<(), AuditError> {
        // Flushing needs no lock: it writes out whatever the file contains.
        self.record_files()?.into_iter().try_for_each(flush)
    }

    fn sync_anchor(&self) -> Result<(), AuditError> {
        let _lock = files::lock_app(&self.paths)?;
        self.anchor_file()?.map_or(Ok(()), flush)
    }

    /// Opens the newest day file, and its directory when an append created
    /// the file since the last sync: what a sync of the records flushes.
    fn record_files(&self) -> Result<Vec<OpenFile>, AuditError> {
        let days = files::list_days(&self.paths.dir).map_err(|source| AuditError::Read {
            file: self.paths.dir.clone(),
            source,
        })?;
        let mut files = Vec::new();
        if let Some(latest) = days.last().filter(|latest| !latest.compressed) {
            files.push(open_for_flush(latest.path.clone())?);
            // On ext4 without a journal every fsync flushes the drive's cache, so
            // the directory is flushed only when it has a new entry.
            if self
                .new_file
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                files.push(open_for_flush(self.paths.dir.clone())?);
            }
        }
        Ok(files)
    }

    /// Opens the head anchor, when there is one.
    fn anchor_file(&self) -> Result<Option<OpenFile>, AuditError> {
        if self.paths.head.exists() {
            open_for_flush(self.paths.head.clone()).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Finds the last record of the chain; the caller holds the lock.
    fn read_head(&self) -> Result<ChainHead, AuditError> {
        let app = self.paths.app.as_str();
        let days = files::list_days(&self.paths.dir).map_err(|source| AuditError::Read {
            file: self.paths.dir.clone(),
            source,
        })?;
        let latest = days.last().cloned();
        let before_latest = days.iter().rev().nth(1).map(|file| file.day.clone());
        let anchor = match anchor::read(&self.paths.head, app, &self.key) {
            Ok(AnchorState::Valid(anchor)) => Some(anchor),
            Ok(AnchorState::Missing) => None,
            Ok(AnchorState::Invalid(reason)) => {
                tracing::warn!(
                    app,
                    reason,
                    "audit head anchor is invalid; continuing from the log file"
                );
                None
            }
            Err(source) => {
                return Err(AuditError::Read {
                    file: self.paths.head.clone(),
                    source,
                });
            }
        };
        let from_anchor = anchor
            .as_ref()
            .and_then(|anchor| anchor.hash_bytes().map(|hash| (anchor.seq, hash)));

        let Some(latest_file) = &latest else {
            if from_anchor.is_some() {
                tracing::warn!(
                    app,
                    "audit log files are missing but the anchor exists; continuing its chain"
                );
            }
            let (seq, hash) = from_anchor.unwrap_or((0, GENESIS_HASH));
            return Ok(ChainHead {
                seq,
                hash,
                latest,
                torn: false,
                has_line: false,
                before_latest,
                open_file: None,
            });
        };

        let mut open_file = None;
        let (last_line, torn) = if latest_file.compressed {
            let content = files::read_day(latest_file).map_err(|source| AuditError::Read {
                file: latest_file.path.clone(),
                source,
            })?;
            let trimmed = content.strip_suffix(b"\n").unwrap_or(&content);
            let start = trimmed
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            (Some(trimmed[start..].to_vec()), false)
        } else {
            let mut file = files::open_append(&latest_file.path)?;
            let tail = files::read_tail(&mut file).map_err(|source| AuditError::Read {
                file: latest_file.path.clone(),
                source,
            })?;
            open_file = Some(file);
            (tail.last_line, tail.torn)
        };

        let from_line = last_line
            .as_deref()
            .and_then(|line| self.authentic_head(line));
        let (seq, hash) = match (from_line, from_anchor) {
            (Some(head), _) => head,
            (None, Some(head)) => head,
            (None, None) => {
                tracing::warn!(app, file = %latest_file.path.display(), "no authentic last record and no anchor; starting a new chain");
                (0, GENESIS_HASH)
            }
        };
        Ok(ChainHead {
            seq,
            hash,
            latest,
            torn,
            has_line: last_line.is_some(),
            before_latest,
            open_file,
        })
    }

    /// Returns the sequence number and hash of `line` if its MAC matches.
    fn authentic_head(&self, line: &[u8]) -> Option<(u64, [u8; 32])> {
        let split = record::split_line(line)?;
        let hash = record::body_hash(split.body);
        if record::record_mac(&self.key, &hash) != split.mac {
            tracing::warn!(app = %self.paths.app, "last audit record has a MAC that does not match");
            return None;
        }
        let fields = record::chain_fields(split.body)?;
        Some((fields.seq, hash))
    }
}

/// Returns the `YYYYMMDD` stem of the day after `day`.
fn next_day(day: &str) -> String {
    chrono::NaiveDate::parse_from_str(day, "%Y%m%d")
        .ok()
        .and_then(|date| date.succ_opt())
        .map_or_else(|| day.to_owned(), |date| date.format("%Y%m%d").to_string())
}

/// Checks that `event` is an upper-case event type such as API_CALL and not reserved.
pub fn validate_event(event: &str) -> Result<(), AuditError> {
    let invalid = |reason: &str| AuditError::InvalidArgument {
        what: "event type",
        value: event.to_owned(),
        reason: reason.to_owned(),
    };
    if event.is_empty() || event.len() > MAX_EVENT_LEN {
        return Err(invalid("use 1 to 64 characters"));
    }
    if !event
        .chars()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(invalid(
            "use upper-case letters, digits and '_', such as API_CALL",
        ));
    }
    if event == LINK_EVENT {
        return Err(invalid("LOG_LINK is written only by the log itself"));
    }
    Ok(())
}

/// A `sync` running on another thread, from [`AuditLog::sync_in_background`].
#[derive(Debug)]
pub struct PendingSync {
    /// Receives the result of flushing the records, once.
    records: Option<std::sync::mpsc::Receiver<Result<(), AuditError>>>,
    /// The thread, which returns the result of flushing the anchor.
    thread: Option<JoinHandle<Result<(), AuditError>>>,
    /// A failure known before any thread started, not yet returned.
    result: Result<(), AuditError>,
}

impl PendingSync {
    fn done(result: Result<(), AuditError>) -> Self {
        Self {
            records: None,
            thread: None,
            result,
        }
    }

    /// Waits until the records are flushed; returns that flush's failure.
    pub fn wait_records(&mut self) -> Result<(), AuditError> {
        if let Some(records) = self.records.take() {
            // A closed channel means the thread ended early, and `wait` reports how.
            if let Ok(flushed) = records.recv() {
                return flushed;
            }
        }
        std::mem::replace(&mut self.result, Ok(()))
    }

    /// Waits until the records and the anchor are flushed; returns the first
    /// failure that `wait_records` has not returned already.
    pub fn wait(mut self) -> Result<(), AuditError> {
        let records = self.wait_records();
        let anchor = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(AuditError::Write {
                file: PathBuf::new(),
                source: std::io::Error::other("the audit sync thread panicked"),
            }),
            None => Ok(()),
        };
        records.and(anchor)
    }
}

/// A file opened for flushing, with its path for error messages.
type OpenFile = (PathBuf, std::fs::File);

fn open_for_flush(path: PathBuf) -> Result<OpenFile, AuditError> {
    match std::fs::File::open(&path) {
        Ok(file) => Ok((path, file)),
        Err(source) => Err(AuditError::Write { file: path, source }),
    }
}

/// Flushes the data of an open file to disk.
fn flush((path, file): OpenFile) -> Result<(), AuditError> {
    file.sync_data()
        .map_err(|source| AuditError::Write { file: path, source })
}
