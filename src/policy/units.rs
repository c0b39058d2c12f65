//! Durations, sizes and rates as written in policy files.
//!
//! Each type parses while the YAML is read, so a bad value is reported by the
//! YAML reader with its file, line and column.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration such as `30m`, `1h 30m` or `45s` (humantime syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSpec(pub Duration);

impl DurationSpec {
    /// Parses a duration, naming the accepted forms on failure.
    pub fn parse(text: &str) -> Result<Self, String> {
        let duration = humantime::parse_duration(text.trim()).map_err(|err| {
            format!("invalid duration {text:?}: {err}; write a number with a unit, such as 30s, 15m, 2h or 1d")
        })?;
        if duration.is_zero() {
            return Err(format!(
                "invalid duration {text:?}: it must be longer than zero"
            ));
        }
        Ok(Self(duration))
    }
}

impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = deserializer.deserialize_any(ScalarText("a duration such as 30m or 1h"))?;
        DurationSpec::parse(&text).map_err(de::Error::custom)
    }
}

impl Serialize for DurationSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl JsonSchema for DurationSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration with a unit, such as 30s, 15m, 2h or 1d.",
            "pattern": "^\\s*[0-9]+\\s*[a-zA-Z]+(\\s*[0-9]+\\s*[a-zA-Z]+)*\\s*$"
        })
    }
}

/// A size in bytes such as `512MiB` or `2GiB` (bytesize syntax; a bare number is bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeSpec(pub u64);

impl SizeSpec {
    /// Parses a size, naming the accepted forms on failure.
    pub fn parse(text: &str) -> Result<Self, String> {
        let size: bytesize::ByteSize = text.trim().parse().map_err(|err| {
            format!(
                "invalid size {text:?}: {err}; write a number with a unit, such as 512MiB or 2GiB"
            )
        })?;
        if size.as_u64() == 0 {
            return Err(format!(
                "invalid size {text:?}: it must be larger than zero"
            ));
        }
        Ok(Self(size.as_u64()))
    }
}

impl fmt::Display for SizeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec())
    }
}

impl<'de> Deserialize<'de> for SizeSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = deserializer.deserialize_any(ScalarText("a size such as 512MiB or 2GiB"))?;
        SizeSpec::parse(&text).map_err(de::Error::custom)
    }
}

impl Serialize for SizeSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl JsonSchema for SizeSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["string", "integer"],
            "description": "A size in bytes, or a number with a unit such as 512MiB or 2GiB."
        })
    }
}

/// A token-bucket rate: `capacity` tokens at most, refilled at `capacity` per `period`
/// unless written in the `{rate, burst}` form with a separate burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSpec {
    /// Tokens added per `period`.
    pub count: u32,
    /// The refill period.
    pub period: Duration,
    /// Bucket capacity: the most tokens that can be taken at once.
    pub burst: u32,
}

impl RateSpec {
    /// Parses `COUNT/PERIOD`, where PERIOD is `second`, `minute`, `hour`, `day`
    /// or a duration such as `5m` or `5 minutes`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let hint = "write COUNT/PERIOD, such as 200/hour, 10/minute or 1/5m";
        let Some((count, period)) = text.split_once('/') else {
            return Err(format!("invalid rate {text:?}: {hint}"));
        };
        let count: u32 = count.trim().parse().map_err(|_| {
            format!("invalid rate {text:?}: {count:?} is not a whole number; {hint}")
        })?;
        if count == 0 {
            return Err(format!(
                "invalid rate {text:?}: the count must be at least 1"
            ));
        }
        let period = parse_period(period.trim())
            .ok_or_else(|| format!("invalid rate {text:?}: unknown period {period:?}; {hint}"))?;
        Ok(Self {
            count,
            period,
            burst: count,
        })
    }

    /// Returns tokens added per second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.period.as_secs_f64()
    }
}

fn parse_period(text: &str) -> Option<Duration> {
    let unit = match text {
        "s" | "sec" | "second" => Some(1),
        "m" | "min" | "minute" => Some(60),
        "h" | "hour" => Some(3600),
        "d" | "day" => Some(86_400),
        "w" | "week" => Some(7 * 86_400),
        _ => None,
    };
    if let Some(seconds) = unit {
        return Some(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text)
        .ok()
        .filter(|d| !d.is_zero())
}

impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.count,
            humantime::format_duration(self.period)
        )?;
        if self.burst != self.count {
            write!(f, " (burst {})", self.burst)?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateTable {
    rate: String,
    burst: u32,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RateForm {
    Text(String),
    Table(RateTable),
}

impl<'de> Deserialize<'de> for RateSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let form = RateForm::deserialize(deserializer).map_err(|_| {
            de::Error::custom("invalid rate: write COUNT/PERIOD (such as 200/hour) or {rate: COUNT/PERIOD, burst: N}")
        })?;
        match form {
            RateForm::Text(text) => RateSpec::parse(&text).map_err(de::Error::custom),
            RateForm::Table(table) => {
                let mut spec = RateSpec::parse(&table.rate).map_err(de::Error::custom)?;
                if table.burst == 0 {
                    return Err(de::Error::custom("invalid rate: burst must be at least 1"));
                }
                spec.burst = table.burst;
                Ok(spec)
            }
        }
    }
}

impl Serialize for RateSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut state = serializer.serialize_struct("RateSpec", 4)?;
        state.serialize_field("count", &self.count)?;
        state.serialize_field("period_seconds", &self.period.as_secs_f64())?;
        state.serialize_field("burst", &self.burst)?;
        state.serialize_field("per_second", &self.per_second())?;
        state.end()
    }
}

impl JsonSchema for RateSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Rate".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "COUNT/PERIOD (burst = COUNT), or {rate: COUNT/PERIOD, burst: N}.",
            "oneOf": [
                { "type": "string", "pattern": "^\\s*[0-9]+\\s*/\\s*\\S+\\s*$" },
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["rate", "burst"],
                    "properties": {
                        "rate": { "type": "string" },
                        "burst": { "type": "integer", "minimum": 1 }
                    }
                }
            ]
        })
    }
}

/// Accepts a YAML scalar (string or number) as text.
struct ScalarText(&'static str);

impl Visitor<'_> for ScalarText {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<String, E> {
        Ok(value.to_owned())
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<String, E> {
        Ok(value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_parses_named_periods() {
        let rate = RateSpec::parse("200/hour").unwrap();
        assert_eq!(rate.count, 200);
        assert_eq!(rate.period, Duration::from_secs(3600));
        assert_eq!(rate.burst, 200);
    }

    #[test]
    fn rate_parses_duration_period() {
        let rate = RateSpec::parse("1/5m").unwrap();
        assert_eq!(rate.period, Duration::from_secs(300));
    }

    #[test]
    fn rate_rejects_zero_and_garbage() {
        assert!(RateSpec::parse("0/hour").is_err());
        assert!(RateSpec::parse("ten/hour").is_err());
        assert!(RateSpec::parse("10/fortnight").is_err());
        assert!(RateSpec::parse("10").is_err());
    }

    #[test]
    fn size_parses_iec_units() {
        assert_eq!(SizeSpec::parse("2GiB").unwrap().0, 2 * 1024 * 1024 * 1024);
        assert!(SizeSpec::parse("lots").is_err());
    }

    #[test]
    fn duration_rejects_missing_unit() {
        assert!(DurationSpec::parse("30").is_err());
        assert_eq!(
            DurationSpec::parse("30m").unwrap().0,
            Duration::from_secs(1800)
        );
    }
}
