//! Time for the token buckets: the boot clock within a boot, the wall clock
//! across reboots.
//!
//! `CLOCK_BOOTTIME` never jumps when someone sets the wall clock and keeps
//! counting through suspend, so within one boot it alone decides how many
//! tokens were refilled. Across a reboot the boot clock restarts, and the
//! elapsed time is the wall-clock difference, but never less than the time
//! since the current boot (a wall clock that went backwards cannot lock the
//! app out). Each boot is identified by `/proc/sys/kernel/random/boot_id`.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::time::{ClockId, clock_gettime};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Environment variable that replaces the system clock with a fixed reading.
///
/// It exists for the integration tests only: `BOOT_ID:BOOT_SECONDS:WALL_SECONDS`,
/// such as `test-boot:1000:1700000000.5`. It cannot help a sandboxed app to
/// gain tokens, because the supervisor decides the app's requests with the
/// clock of its own environment, which the app cannot change. A `safe-exec
/// rate` command started inside the sandbox with this variable set fails,
/// because Landlock keeps it away from the state files.
pub const TEST_CLOCK_ENV: &str = "SAFE_EXEC_TEST_CLOCK";

const BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";

/// A reading of both clocks, taken together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// The kernel's boot id at the time of the reading.
    pub boot_id: String,
    /// `CLOCK_BOOTTIME`, in nanoseconds since boot.
    pub boot_ns: u64,
    /// Wall clock, in nanoseconds since the Unix epoch (0 before the epoch).
    pub wall_ns: u64,
}

impl Stamp {
    /// Returns the time that passed from `earlier` to `self`, clamped as the
    /// module documentation describes.
    pub fn elapsed_since(&self, earlier: &Stamp) -> Duration {
        if self.boot_id == earlier.boot_id {
            return Duration::from_nanos(self.boot_ns.saturating_sub(earlier.boot_ns));
        }
        // NOTE: across a reboot nothing but the wall clock measures the
        // downtime, so a wall clock set forward at that moment refills the buckets.
        let wall = self.wall_ns.saturating_sub(earlier.wall_ns);
        Duration::from_nanos(wall.max(self.boot_ns))
    }
}

/// A clock that could not be read.
#[derive(Debug, Error)]
pub enum ClockError {
    #[error("failed to read the boot id from {BOOT_ID_FILE}: {0}")]
    BootId(std::io::Error),
    #[error("failed to read CLOCK_BOOTTIME: {0}")]
    BootTime(nix::Error),
    #[error("invalid {TEST_CLOCK_ENV} value {0:?}; write BOOT_ID:BOOT_SECONDS:WALL_SECONDS")]
    TestClock(String),
}

/// Source of time for the buckets; tests inject their own.
pub trait Clock: Send + Sync {
    /// Reads the boot and wall clocks.
    fn now(&self) -> Result<Stamp, ClockError>;
}

/// The host's clocks.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Result<Stamp, ClockError> {
        static BOOT_ID: OnceLock<String> = OnceLock::new();
        let boot_id = match BOOT_ID.get() {
            Some(id) => id.clone(),
            None => {
                let id = std::fs::read_to_string(BOOT_ID_FILE)
                    .map_err(ClockError::BootId)?
                    .trim()
                    .to_owned();
                BOOT_ID.get_or_init(|| id).clone()
            }
        };
        let boot = clock_gettime(ClockId::CLOCK_BOOTTIME).map_err(ClockError::BootTime)?;
        let boot = Duration::from(boot);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Ok(Stamp {
            boot_id,
            boot_ns: saturating_nanos(boot),
            wall_ns: saturating_nanos(wall),
        })
    }
}

/// A clock that stays where it is set; for tests.
#[derive(Debug)]
pub struct ManualClock(Mutex<Stamp>);

impl ManualClock {
    /// Starts the clock at `stamp`.
    pub fn new(stamp: Stamp) -> Self {
        Self(Mutex::new(stamp))
    }

    /// Parses the `BOOT_ID:BOOT_SECONDS:WALL_SECONDS` form of [`TEST_CLOCK_ENV`].
    pub fn parse(text: &str) -> Result<Self, ClockError> {
        let invalid = || ClockError::TestClock(text.to_owned());
        let mut parts = text.rsplitn(3, ':');
        let wall = parts.next().and_then(parse_seconds).ok_or_else(invalid)?;
        let boot = parts.next().and_then(parse_seconds).ok_or_else(invalid)?;
        let boot_id = parts
            .next()
            .filter(|id| !id.is_empty())
            .ok_or_else(invalid)?;
        Ok(Self::new(Stamp {
            boot_id: boot_id.to_owned(),
            boot_ns: boot,
            wall_ns: wall,
        }))
    }

    /// Moves the clock to `stamp`.
    pub fn set(&self, stamp: Stamp) {
        if let Ok(mut current) = self.0.lock() {
            *current = stamp;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Result<Stamp, ClockError> {
        match self.0.lock() {
            Ok(stamp) => Ok(stamp.clone()),
            Err(poisoned) => Ok(poisoned.into_inner().clone()),
        }
    }
}

/// Returns the clock for this process: the test clock when [`TEST_CLOCK_ENV`]
/// is set, the system clock otherwise.
pub fn from_env() -> Result<Box<dyn Clock>, ClockError> {
    match std::env::var(TEST_CLOCK_ENV) {
        Ok(text) => {
            tracing::warn!(value = %text, "using the test clock from {TEST_CLOCK_ENV}");
            Ok(Box::new(ManualClock::parse(&text)?))
        }
        Err(_) => Ok(Box::new(SystemClock)),
    }
}

fn parse_seconds(text: &str) -> Option<u64> {
    let seconds: f64 = text.trim().parse().ok()?;
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    Some(saturating_nanos(Duration::from_secs_f64(seconds)))
}

fn saturating_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails on any error")]
mod tests {
    use super::*;

    fn stamp(boot_id: &str, boot_s: u64, wall_s: u64) -> Stamp {
        Stamp {
            boot_id: boot_id.into(),
            boot_ns: boot_s * 1_000_000_000,
            wall_ns: wall_s * 1_000_000_000,
        }
    }

    #[test]
    fn same_boot_ignores_wall_jumps() {
        let then = stamp("a", 100, 1_000_000);
        assert_eq!(
            stamp("a", 110, 1_003_610).elapsed_since(&then),
            Duration::from_secs(10)
        );
        assert_eq!(
            stamp("a", 110, 996_410).elapsed_since(&then),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn reboot_uses_wall_clock() {
        let then = stamp("a", 5_000, 1_000_000);
        assert_eq!(
            stamp("b", 60, 1_000_600).elapsed_since(&then),
            Duration::from_secs(600)
        );
    }

    #[test]
    fn reboot_with_wall_clock_backwards_counts_uptime() {
        let then = stamp("a", 5_000, 1_000_000);
        assert_eq!(
            stamp("b", 60, 996_400).elapsed_since(&then),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn test_clock_parses() {
        let clock = ManualClock::parse("boot-x:12.5:1700000000").unwrap();
        let now = clock.now().unwrap();
        assert_eq!(now.boot_id, "boot-x");
        assert_eq!(now.boot_ns, 12_500_000_000);
        assert_eq!(now.wall_ns, 1_700_000_000_000_000_000);
        assert!(ManualClock::parse("1:2").is_err());
        assert!(ManualClock::parse("x:-1:2").is_err());
    }

    #[test]
    fn system_clock_reads() {
        let now = SystemClock.now().unwrap();
        assert!(!now.boot_id.is_empty());
        assert!(now.boot_ns > 0);
    }
}
