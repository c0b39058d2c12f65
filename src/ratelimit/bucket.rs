//! Token-bucket arithmetic on whole micro-tokens, so that `10/minute` refills
//! exactly one token every 6 seconds with no floating-point drift.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::clock::Stamp;
use crate::policy::units::RateSpec;

/// Micro-tokens in one token.
pub const MICRO: u64 = 1_000_000;

/// The stored level of one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketState {
    /// Tokens left, in micro-tokens.
    pub micro_tokens: u64,
    /// When `micro_tokens` was last brought up to date.
    pub updated: Stamp,
    /// The fraction of a micro-token refilled but not yet credited, in units
    /// of 1 / (period in nanoseconds) micro-tokens, so that frequent updates
    /// lose nothing to rounding.
    #[serde(default)]
    pub carry: u64,
}

impl BucketState {
    /// Returns a full bucket as of `now`.
    pub fn full(spec: &RateSpec, now: &Stamp) -> Self {
        Self {
            micro_tokens: capacity_micro(spec),
            updated: now.clone(),
            carry: 0,
        }
    }

    /// Adds the tokens refilled since the last update and moves the stamp to `now`.
    pub fn refill(&mut self, spec: &RateSpec, now: &Stamp) {
        let elapsed = now.elapsed_since(&self.updated);
        let period_ns = spec.period.as_nanos().max(1);
        let numerator = elapsed
            .as_nanos()
            .saturating_mul(u128::from(spec.count) * u128::from(MICRO))
            .saturating_add(u128::from(self.carry));
        let added = u64::try_from(numerator / period_ns).unwrap_or(u64::MAX);
        let capacity = capacity_micro(spec);
        self.micro_tokens = self.micro_tokens.saturating_add(added).min(capacity);
        self.carry = if self.micro_tokens == capacity {
            0
        } else {
            u64::try_from(numerator % period_ns).unwrap_or(0)
        };
        self.updated = now.clone();
    }

    /// Returns the time until `cost` tokens are available, zero when they are.
    pub fn wait_for(&self, spec: &RateSpec, cost: u32) -> Duration {
        let needed = u64::from(cost) * MICRO;
        if self.micro_tokens >= needed {
            return Duration::ZERO;
        }
        let missing = u128::from(needed - self.micro_tokens);
        let per_period = u128::from(spec.count) * u128::from(MICRO);
        let period_ns = spec.period.as_nanos();
        let nanos = (missing * period_ns).div_ceil(per_period);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Returns the tokens left as a number for display.
    pub fn tokens(&self) -> f64 {
        self.micro_tokens as f64 / MICRO as f64
    }
}

/// Returns the bucket capacity in micro-tokens.
pub fn capacity_micro(spec: &RateSpec) -> u64 {
    u64::from(spec.burst) * MICRO
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails on any error")]
mod tests {
    use super::*;

    fn at(seconds: u64) -> Stamp {
        Stamp {
            boot_id: "b".into(),
            boot_ns: seconds * 1_000_000_000,
            wall_ns: 0,
        }
    }

    #[test]
    fn ten_per_minute_refills_one_every_six_seconds() {
        let spec = RateSpec::parse("10/minute").unwrap();
        let mut bucket = BucketState {
            micro_tokens: 0,
            updated: at(0),
            carry: 0,
        };
        assert_eq!(bucket.wait_for(&spec, 1), Duration::from_secs(6));
        bucket.refill(&spec, &at(5));
        assert_eq!(bucket.micro_tokens / MICRO, 0);
        bucket.refill(&spec, &at(6));
        assert_eq!(bucket.micro_tokens, MICRO);
    }

    #[test]
    fn refill_stops_at_capacity() {
        let spec = RateSpec::parse("10/minute").unwrap();
        let mut bucket = BucketState {
            micro_tokens: 0,
            updated: at(0),
            carry: 0,
        };
        bucket.refill(&spec, &at(86_400));
        assert_eq!(bucket.micro_tokens, 10 * MICRO);
    }
}
