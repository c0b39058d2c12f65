//! The source of the current time for audit records and day files.
//!
//! Production code uses [`SystemClock`]; tests and the hidden `--now` option
//! of the `audit` commands use [`FixedClock`] to cross a date change.

use chrono::{DateTime, Utc};

/// A source of the current UTC time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Returns the current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that always returns the same time.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// Returns the day file stem (`YYYYMMDD`) for `time`.
pub fn day_of(time: DateTime<Utc>) -> String {
    time.format("%Y%m%d").to_string()
}
