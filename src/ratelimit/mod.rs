//! Token-bucket rate limits shared by every process on the host.
//!
//! The `rate` commands, the e-mail guard and the supervisor's request channel
//! all decide through a [`Limiter`]: it reads the app's buckets from the
//! [`store`] under a lock, refills them by the [`clock`], takes tokens and
//! writes them back. A bucket that was never used starts full. A request for
//! more tokens than the bucket holds when full fails at once as impossible.

pub mod bucket;
pub mod clock;
pub mod preflight;
pub mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use crate::exit::{Code, HasExitCode};
use crate::policy::units::RateSpec;
use bucket::{BucketState, capacity_micro};
use clock::{Clock, ClockError};
use store::Store;

/// A rate-limit operation that failed (a denial is not an error; see [`Acquired`]).
#[derive(Debug, Error)]
pub enum RateError {
    #[error("app {app:?} has no rate-limit bucket {bucket:?}; its policy defines: {known}")]
    UnknownBucket {
        app: String,
        bucket: String,
        known: String,
    },

    #[error(
        "cost {cost} can never be granted: bucket {bucket:?} of app {app:?} holds at most {burst} tokens ({spec})"
    )]
    Impossible {
        app: String,
        bucket: String,
        cost: u32,
        burst: u32,
        spec: String,
    },

    #[error("invalid cost 0 for bucket {bucket:?}; take at least 1 token")]
    ZeroCost { bucket: String },

    #[error("failed to access rate-limit state {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("failed to lock rate-limit state {path}: {source}")]
    Lock { path: PathBuf, source: nix::Error },

    #[error(
        "rate-limit state {path} is unreadable ({message}); run `safe-exec rate reset --app {app}` to start it afresh"
    )]
    Corrupt {
        path: PathBuf,
        app: String,
        message: String,
    },

    #[error(transparent)]
    Clock(#[from] ClockError),
}

impl HasExitCode for RateError {
    fn exit_code(&self) -> Code {
        match self {
            RateError::UnknownBucket { .. }
            | RateError::Impossible { .. }
            | RateError::ZeroCost { .. }
            | RateError::Corrupt { .. } => Code::DataErr,
            RateError::Io { .. } | RateError::Lock { .. } | RateError::Clock(_) => Code::Supervisor,
        }
    }
}

/// The outcome of taking tokens.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Acquired {
    /// The tokens were taken.
    Granted {
        /// Tokens left after this request.
        tokens: f64,
    },
    /// Not enough tokens; nothing was taken.
    Denied {
        /// Tokens in the bucket now.
        tokens: f64,
        /// Time until the requested tokens are available.
        #[serde(serialize_with = "seconds")]
        retry_after: Duration,
    },
}

/// One bucket as `rate status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BucketStatus {
    pub app: String,
    pub bucket: String,
    /// Tokens available now.
    pub tokens: f64,
    /// Maximum number of tokens in the bucket.
    pub capacity: u32,
    /// The policy's rate as written, such as `10/1h`.
    pub rate: String,
    /// Tokens added per second.
    pub refill_per_second: f64,
    /// Time until the next whole token, zero when one is available.
    #[serde(rename = "next_token_seconds", serialize_with = "seconds")]
    pub next_token: Duration,
}

/// Decides rate-limit requests against the shared state.
#[derive(Clone)]
pub struct Limiter {
    store: Store,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// Uses the state in `dir` (created 0700 when missing) and `clock`.
    pub fn open(dir: &std::path::Path, clock: Arc<dyn Clock>) -> Result<Self, RateError> {
        Ok(Self {
            store: Store::open(dir)?,
            clock,
        })
    }

    /// Returns the state file of `app`, for messages.
    pub fn state_file(&self, app: &str) -> PathBuf {
        self.store.state_file(app)
    }

    /// Takes `cost` tokens from `bucket` of `app` when it contains enough.
    pub fn acquire(
        &self,
        app: &str,
        limits: &BTreeMap<String, RateSpec>,
        bucket: &str,
        cost: u32,
    ) -> Result<Acquired, RateError> {
        let spec = lookup(app, limits, bucket)?;
        if cost == 0 {
            return Err(RateError::ZeroCost {
                bucket: bucket.to_owned(),
            });
        }
        if cost > spec.burst {
            return Err(RateError::Impossible {
                app: app.to_owned(),
                bucket: bucket.to_owned(),
                cost,
                burst: spec.burst,
                spec: spec.to_string(),
            });
        }
        let now = self.clock.now()?;
        self.store.update(app, |state| {
            let entry = state
                .buckets
                .entry(bucket.to_owned())
                .or_insert_with(|| BucketState::full(spec, &now));
            entry.refill(spec, &now);
            let wait = entry.wait_for(spec, cost);
            if wait.is_zero() {
                entry.micro_tokens -= u64::from(cost) * bucket::MICRO;
                Acquired::Granted {
                    tokens: entry.tokens(),
                }
            } else {
                Acquired::Denied {
                    tokens: entry.tokens(),
                    retry_after: wait,
                }
            }
        })
    }

    /// Returns the state of every bucket in `limits`, refilled to now, without
    /// changing anything on disk.
    pub fn status(
        &self,
        app: &str,
        limits: &BTreeMap<String, RateSpec>,
    ) -> Result<Vec<BucketStatus>, RateError> {
        let now = self.clock.now()?;
        let state = self.store.read(app)?;
        let mut statuses = Vec::new();
        for (name, spec) in limits {
            let mut bucket = state
                .buckets
                .get(name)
                .cloned()
                .unwrap_or_else(|| BucketState::full(spec, &now));
            bucket.refill(spec, &now);
            statuses.push(BucketStatus {
                app: app.to_owned(),
                bucket: name.clone(),
                tokens: bucket.tokens(),
                capacity: spec.burst,
                rate: spec.to_string(),
                refill_per_second: spec.per_second(),
                next_token: bucket.wait_for(spec, 1),
            });
        }
        Ok(statuses)
    }

    /// Fills `bucket` (every bucket of the policy when `None`) and returns the
    /// names of the buckets filled.
    pub fn reset(
        &self,
        app: &str,
        limits: &BTreeMap<String, RateSpec>,
        bucket: Option<&str>,
    ) -> Result<Vec<String>, RateError> {
        let names: Vec<String> = match bucket {
            Some(name) => {
                lookup(app, limits, name)?;
                vec![name.to_owned()]
            }
            None => limits.keys().cloned().collect(),
        };
        let now = self.clock.now()?;
        let change = |state: &mut store::AppState| {
            for name in &names {
                if let Some(spec) = limits.get(name) {
                    state
                        .buckets
                        .insert(name.clone(), BucketState::full(spec, &now));
                }
            }
        };
        match self.store.update(app, change) {
            Ok(()) => {}
            // A reset is how a user recovers from unreadable state, so it starts afresh.
            Err(RateError::Corrupt { .. }) if bucket.is_none() => {
                let path = self.store.state_file(app);
                std::fs::remove_file(&path).map_err(|source| RateError::Io { path, source })?;
                self.store.update(app, change)?;
            }
            Err(err) => return Err(err),
        }
        Ok(names)
    }
}

/// Returns the capacity of a bucket in tokens, for messages.
pub fn capacity(spec: &RateSpec) -> u64 {
    capacity_micro(spec) / bucket::MICRO
}

fn lookup<'a>(
    app: &str,
    limits: &'a BTreeMap<String, RateSpec>,
    bucket: &str,
) -> Result<&'a RateSpec, RateError> {
    limits.get(bucket).ok_or_else(|| RateError::UnknownBucket {
        app: app.to_owned(),
        bucket: bucket.to_owned(),
        known: if limits.is_empty() {
            "no buckets".to_owned()
        } else {
            limits.keys().cloned().collect::<Vec<_>>().join(", ")
        },
    })
}

fn seconds<S: serde::Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(value.as_secs_f64())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails on any error")]
mod tests {
    use super::clock::{ManualClock, Stamp};
    use super::*;

    fn stamp(boot_id: &str, boot_s: u64, wall_s: u64) -> Stamp {
        Stamp {
            boot_id: boot_id.into(),
            boot_ns: boot_s * 1_000_000_000,
            wall_ns: wall_s * 1_000_000_000,
        }
    }

    fn limits(text: &str) -> BTreeMap<String, RateSpec> {
        BTreeMap::from([("b".to_owned(), RateSpec::parse(text).unwrap())])
    }

    #[test]
    fn burst_then_refill() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(stamp("x", 100, 1_000)));
        let limiter = Limiter::open(dir.path(), clock.clone()).unwrap();
        let limits = limits("10/minute");
        for _ in 0..10 {
            assert!(matches!(
                limiter.acquire("a", &limits, "b", 1).unwrap(),
                Acquired::Granted { .. }
            ));
        }
        let denied = limiter.acquire("a", &limits, "b", 1).unwrap();
        assert_eq!(
            denied,
            Acquired::Denied {
                tokens: 0.0,
                retry_after: Duration::from_secs(6)
            }
        );
        clock.set(stamp("x", 106, 1_006));
        assert!(matches!(
            limiter.acquire("a", &limits, "b", 1).unwrap(),
            Acquired::Granted { .. }
        ));
    }

    #[test]
    fn impossible_and_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let limiter =
            Limiter::open(dir.path(), Arc::new(ManualClock::new(stamp("x", 1, 1)))).unwrap();
        let limits = limits("10/minute");
        assert!(matches!(
            limiter.acquire("a", &limits, "b", 11),
            Err(RateError::Impossible { .. })
        ));
        assert!(matches!(
            limiter.acquire("a", &limits, "nope", 1),
            Err(RateError::UnknownBucket { .. })
        ));
        assert!(matches!(
            limiter.acquire("a", &limits, "b", 0),
            Err(RateError::ZeroCost { .. })
        ));
    }

    #[test]
    fn corrupt_state_is_reported_and_reset() {
        let dir = tempfile::tempdir().unwrap();
        let limiter =
            Limiter::open(dir.path(), Arc::new(ManualClock::new(stamp("x", 1, 1)))).unwrap();
        let limits = limits("10/minute");
        std::fs::write(limiter.state_file("a"), "{not json").unwrap();
        assert!(matches!(
            limiter.acquire("a", &limits, "b", 1),
            Err(RateError::Corrupt { .. })
        ));
        limiter.reset("a", &limits, None).unwrap();
        assert!(matches!(
            limiter.acquire("a", &limits, "b", 1).unwrap(),
            Acquired::Granted { .. }
        ));
    }
}
