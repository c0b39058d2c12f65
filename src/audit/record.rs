//! The line format of an audit record, and its hash and MAC.
//!
//! A line is one JSON object whose last member is the MAC:
//! `{"seq":..,"ts":..,"app":..,"run_id":..,"event":..,"level":..,"actor":..,"details":..,"prev_hash":"<64 hex>","mac":"<64 hex>"}`.
//! The record's hash is SHA-256 over every byte of the line before
//! `,"mac":"`, exactly as written, so verification never re-serialises a
//! record. The MAC is HMAC-SHA256 under the audit key over a fixed label and
//! that hash. The next record's `prev_hash` is this hash.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::key::MacKey;

/// The `prev_hash` of the first record of a chain.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Event type of the record that opens every daily file and links it to the previous one.
pub const LINK_EVENT: &str = "LOG_LINK";

/// The bytes between the hash-covered body and the MAC's hex digits.
const MAC_PREFIX: &[u8] = b",\"mac\":\"";

/// Length of `,"mac":"<64 hex>"}`, the fixed tail of every line.
pub const MAC_SUFFIX_LEN: usize = MAC_PREFIX.len() + 64 + 2;

/// Label mixed into every record MAC, so a record MAC can never pass as an anchor MAC.
const RECORD_MAC_LABEL: &[u8] = b"safe-exec audit record v1\0";

/// Severity of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Info,
    Warning,
    Critical,
}

impl Level {
    /// Returns the name written in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "INFO",
            Self::Warning => "WARNING",
            Self::Critical => "CRITICAL",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_uppercase().as_str() {
            "INFO" => Ok(Self::Info),
            "WARNING" | "WARN" => Ok(Self::Warning),
            "CRITICAL" => Ok(Self::Critical),
            _ => Err("expected INFO, WARNING or CRITICAL".to_owned()),
        }
    }
}

/// The party that caused a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Actor {
    Supervisor,
    App,
}

/// A record as read back from a log file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub ts: chrono::DateTime<chrono::Utc>,
    pub app: String,
    pub run_id: String,
    pub event: String,
    pub level: Level,
    pub actor: Actor,
    #[serde(default)]
    pub details: serde_json::Value,
    pub prev_hash: String,
    #[serde(default)]
    pub mac: String,
}

/// The fields of a record before its hash is known, in the order they are written.
#[derive(Serialize)]
pub(crate) struct RecordBody<'a> {
    pub seq: u64,
    pub ts: String,
    pub app: &'a str,
    pub run_id: &'a str,
    pub event: &'a str,
    pub level: Level,
    pub actor: Actor,
    pub details: &'a serde_json::Value,
    pub prev_hash: String,
}

/// One encoded line, ready to be written, with the hash the next record links to.
pub(crate) struct EncodedLine {
    pub bytes: Vec<u8>,
    pub hash: [u8; 32],
}

/// Encodes `body` as a line ending in `\n` and computes its hash and MAC.
pub(crate) fn encode(
    body: &RecordBody<'_>,
    key: &MacKey,
) -> Result<EncodedLine, serde_json::Error> {
    let mut bytes = serde_json::to_vec(body)?;

    // serde_json closes the object; reopen it to append the MAC member.
    bytes.pop();
    let hash = body_hash(&bytes);
    let mac = record_mac(key, &hash);

    bytes.extend_from_slice(MAC_PREFIX);
    bytes.extend_from_slice(hex::encode(mac).as_bytes());
    bytes.extend_from_slice(b"\"}\n");
    Ok(EncodedLine { bytes, hash })
}

/// Returns the SHA-256 of the hash-covered part of a line.
pub fn body_hash(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// Returns the MAC of a record whose body hashes to `hash`.
pub fn record_mac(key: &MacKey, hash: &[u8; 32]) -> [u8; 32] {
    RecordMac::new(key).compute(hash)
}

/// An HMAC keyed once, for computing the MACs of many records.
#[derive(Clone)]
pub struct RecordMac(Hmac<Sha256>);

impl RecordMac {
    /// Keys the HMAC with `key`.
    pub fn new(key: &MacKey) -> Self {
        Self(new_mac(key))
    }

    /// Returns the MAC of a record whose body hashes to `hash`.
    pub fn compute(&self, hash: &[u8; 32]) -> [u8; 32] {
        // Cloning the keyed state skips hashing the key pads for every record.
        let mut mac = self.0.clone();
        mac.update(RECORD_MAC_LABEL);
        mac.update(hash);
        mac.finalize().into_bytes().into()
    }
}

/// Returns an HMAC-SHA256 instance keyed with `key`.
pub(crate) fn new_mac(key: &MacKey) -> Hmac<Sha256> {
    // RFC 2104 HMAC accepts keys of any length, and `new_from_slice` only
    // rejects lengths for MACs with a fixed key size, which HMAC is not.
    match <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of every length"),
    }
}

/// A line split into the hash-covered body and the MAC it carries.
#[derive(Debug, Clone, Copy)]
pub struct SplitLine<'a> {
    pub body: &'a [u8],
    pub mac: [u8; 32],
}

/// Splits a line (without its `\n`) into body and MAC, or returns `None`
/// when it does not end in a well-formed MAC member (a torn or mangled line).
pub fn split_line(line: &[u8]) -> Option<SplitLine<'_>> {
    if line.len() < MAC_SUFFIX_LEN + 2 || line.first() != Some(&b'{') || !line.ends_with(b"\"}") {
        return None;
    }
    let mac_start = line.len() - MAC_SUFFIX_LEN;
    let (body, suffix) = line.split_at(mac_start);
    if !suffix.starts_with(MAC_PREFIX) {
        return None;
    }
    let hex_digits = &suffix[MAC_PREFIX.len()..MAC_PREFIX.len() + 64];
    let mut mac = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut mac).ok()?;
    Some(SplitLine { body, mac })
}

/// The fields verification needs, read from a record body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainFields<'a> {
    pub seq: u64,
    pub app: Cow<'a, str>,
    pub event: Cow<'a, str>,
    pub prev_hash: [u8; 32],
}

/// Reads the chain fields from a record body (the line before `,"mac":"`).
///
/// The writer puts `seq`, `ts`, `app`, `run_id` and `event` first and
/// `prev_hash` last, so a scan of those positions is enough for every line
/// it wrote. Anything else falls back to a full JSON parse, so a line that a
/// person reformatted is still read and then judged by its MAC.
pub fn chain_fields(body: &[u8]) -> Option<ChainFields<'_>> {
    scan_chain_fields(body).or_else(|| parse_chain_fields(body))
}

fn scan_chain_fields(body: &[u8]) -> Option<ChainFields<'_>> {
    const PREV: &[u8] = b",\"prev_hash\":\"";
    let prev_start = body.len().checked_sub(PREV.len() + 64 + 1)?;
    let prev = &body[prev_start..];
    if !prev.starts_with(PREV) || !prev.ends_with(b"\"") {
        return None;
    }
    let mut prev_hash = [0u8; 32];
    hex::decode_to_slice(&prev[PREV.len()..PREV.len() + 64], &mut prev_hash).ok()?;

    let mut scanner = Scanner { rest: body };
    scanner.expect(b"{\"seq\":")?;
    let seq = scanner.number()?;
    scanner.expect(b",\"ts\":")?;
    scanner.plain_string()?;
    scanner.expect(b",\"app\":")?;
    let app = scanner.plain_string()?;
    scanner.expect(b",\"run_id\":")?;
    scanner.plain_string()?;
    scanner.expect(b",\"event\":")?;
    let event = scanner.plain_string()?;
    Some(ChainFields {
        seq,
        app: Cow::Borrowed(app),
        event: Cow::Borrowed(event),
        prev_hash,
    })
}

fn parse_chain_fields(body: &[u8]) -> Option<ChainFields<'static>> {
    #[derive(Deserialize)]
    struct Fields {
        seq: u64,
        app: String,
        event: String,
        prev_hash: String,
    }
    let mut object = body.to_vec();
    object.push(b'}');
    let fields: Fields = serde_json::from_slice(&object).ok()?;
    let mut prev_hash = [0u8; 32];
    hex::decode_to_slice(fields.prev_hash.as_bytes(), &mut prev_hash).ok()?;
    Some(ChainFields {
        seq: fields.seq,
        app: Cow::Owned(fields.app),
        event: Cow::Owned(fields.event),
        prev_hash,
    })
}

/// A forward scanner over the fixed opening of a record body.
struct Scanner<'a> {
    rest: &'a [u8],
}

impl<'a> Scanner<'a> {
    fn expect(&mut self, text: &[u8]) -> Option<()> {
        self.rest = self.rest.strip_prefix(text)?;
        Some(())
    }

    fn number(&mut self) -> Option<u64> {
        let digits = self.rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let value = std::str::from_utf8(&self.rest[..digits])
            .ok()?
            .parse()
            .ok()?;
        self.rest = &self.rest[digits..];
        Some(value)
    }

    /// Reads a JSON string without escapes; a string with escapes returns `None`.
    fn plain_string(&mut self) -> Option<&'a str> {
        let inner = self.rest.strip_prefix(b"\"")?;
        let end = inner.iter().position(|&b| b == b'"' || b == b'\\')?;
        if inner[end] != b'"' {
            return None;
        }
        let text = std::str::from_utf8(&inner[..end]).ok()?;
        self.rest = &inner[end + 1..];
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MacKey {
        MacKey::from_bytes([7; 32])
    }

    fn body<'a>(details: &'a serde_json::Value) -> RecordBody<'a> {
        RecordBody {
            seq: 3,
            ts: "2026-12-04T10:00:00.000000Z".to_owned(),
            app: "mail",
            run_id: "r1",
            event: "API_CALL",
            level: Level::Info,
            actor: Actor::App,
            details,
            prev_hash: hex::encode([9u8; 32]),
        }
    }

    #[test]
    fn encoded_line_splits_back() {
        let details = serde_json::json!({"endpoint": "/v1", "optional": null});
        let line = encode(&body(&details), &key()).unwrap();
        let text = line.bytes.strip_suffix(b"\n").unwrap();
        let split = split_line(text).unwrap();
        assert_eq!(body_hash(split.body), line.hash);
        assert_eq!(record_mac(&key(), &line.hash), split.mac);
    }

    #[test]
    fn encoded_line_is_valid_json() {
        let details = serde_json::json!({"optional": null, "quote": "a\"b"});
        let line = encode(&body(&details), &key()).unwrap();
        let record: Record = serde_json::from_slice(&line.bytes).unwrap();
        assert_eq!(record.seq, 3);
        assert_eq!(record.details["optional"], serde_json::Value::Null);
    }

    #[test]
    fn chain_fields_scan_and_parse_agree() {
        let details = serde_json::json!({"n": 1});
        let line = encode(&body(&details), &key()).unwrap();
        let split = split_line(line.bytes.strip_suffix(b"\n").unwrap()).unwrap();
        let scanned = scan_chain_fields(split.body).unwrap();
        let parsed = parse_chain_fields(split.body).unwrap();
        assert_eq!(scanned, parsed);
        assert_eq!(scanned.prev_hash, [9u8; 32]);
        assert_eq!(scanned.app, "mail");
    }

    #[test]
    fn torn_line_does_not_split() {
        let details = serde_json::json!({});
        let line = encode(&body(&details), &key()).unwrap();
        let half = &line.bytes[..line.bytes.len() / 2];
        assert!(split_line(half).is_none());
    }

    #[test]
    fn level_parses_case_insensitively() {
        assert_eq!("critical".parse::<Level>().unwrap(), Level::Critical);
        assert!("LOUD".parse::<Level>().is_err());
    }
}
