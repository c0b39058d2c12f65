//! The head anchor: the last sequence number, hash and day of an app's
//! chain, MACed and kept in `<vault>/audit/<app>.head`, outside the log files.
//!
//! Cutting records off the end, emptying the newest file or deleting it
//! leaves the chain itself consistent; the anchor is what shows the loss.
//! It is overwritten in place under the app's lock after every append.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use hmac::Mac;
use serde::{Deserialize, Serialize};

use super::key::MacKey;
use super::record::new_mac;

/// Label mixed into every anchor MAC, so an anchor MAC can never pass as a record MAC.
const ANCHOR_MAC_LABEL: &[u8] = b"safe-exec audit head v1\0";

/// The head of one app's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub app: String,
    /// Sequence number of the last record.
    pub seq: u64,
    /// Hash of the last record, hex.
    pub hash: String,
    /// Day file (`YYYYMMDD`) holding the last record.
    pub day: String,
    /// HMAC-SHA256 over the fields above, hex.
    pub mac: String,
}

/// The state of an anchor file.
#[derive(Debug, Clone)]
pub enum AnchorState {
    Missing,
    /// The file exists but cannot be parsed or its MAC does not match.
    Invalid(String),
    Valid(Anchor),
}

impl Anchor {
    /// Builds the anchor for the record `seq` with `hash` in the file of `day`.
    pub fn new(app: &str, seq: u64, hash: &[u8; 32], day: &str, key: &MacKey) -> Self {
        let hash = hex::encode(hash);
        let mac = hex::encode(anchor_mac(key, app, seq, &hash, day));
        Self {
            app: app.to_owned(),
            seq,
            hash,
            day: day.to_owned(),
            mac,
        }
    }

    /// Returns the last record's hash as bytes, if well formed.
    pub fn hash_bytes(&self) -> Option<[u8; 32]> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&self.hash, &mut hash).ok()?;
        Some(hash)
    }

    fn mac_matches(&self, key: &MacKey) -> bool {
        let mut mac = new_mac(key);
        mac.update(&anchor_mac_input(
            &self.app, self.seq, &self.hash, &self.day,
        ));
        let Ok(expected) = hex::decode(&self.mac) else {
            return false;
        };
        mac.verify_slice(&expected).is_ok()
    }
}

fn anchor_mac_input(app: &str, seq: u64, hash: &str, day: &str) -> Vec<u8> {
    let mut input = ANCHOR_MAC_LABEL.to_vec();
    input.extend_from_slice(format!("{app}\0{seq}\0{hash}\0{day}").as_bytes());
    input
}

fn anchor_mac(key: &MacKey, app: &str, seq: u64, hash: &str, day: &str) -> [u8; 32] {
    let mut mac = new_mac(key);
    mac.update(&anchor_mac_input(app, seq, hash, day));
    mac.finalize().into_bytes().into()
}

/// Reads and checks the anchor of `app` at `path`.
pub fn read(path: &Path, app: &str, key: &MacKey) -> std::io::Result<AnchorState> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(AnchorState::Missing),
        Err(err) => return Err(err),
    };
    let anchor: Anchor = match serde_json::from_slice(&text) {
        Ok(anchor) => anchor,
        Err(err) => return Ok(AnchorState::Invalid(format!("not a valid anchor: {err}"))),
    };
    if anchor.app != app {
        return Ok(AnchorState::Invalid(format!(
            "anchor belongs to app {:?}",
            anchor.app
        )));
    }
    if !anchor.mac_matches(key) || anchor.hash_bytes().is_none() {
        return Ok(AnchorState::Invalid(
            "the anchor's MAC does not match its contents".to_owned(),
        ));
    }
    Ok(AnchorState::Valid(anchor))
}

/// Size of the anchor file: the JSON object padded with spaces, then `\n`.
const ANCHOR_FILE_LEN: usize = 512;

/// Overwrites the anchor at `path` in place with one 512-byte write at
/// offset 0; with `sync`, fsyncs it before returning.
///
/// Overwriting in place, rather than renaming a new file over it, keeps an
/// append from creating and deleting an inode every time, which costs more
/// than the rest of the append on ext4. Writers and `verify` read the anchor
/// only under the app's lock, so no reader sees a half-written anchor.
// NOTE: after a power loss the anchor is whole only if the drive writes one
// 512-byte sector atomically, as most do. A torn anchor is reported as
// `anchor_changed` until the next append rewrites it.
pub fn write(path: &Path, anchor: &Anchor, sync: bool) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(anchor).map_err(std::io::Error::other)?;
    if bytes.len() >= ANCHOR_FILE_LEN {
        return Err(std::io::Error::other(format!(
            "anchor of {} bytes does not fit in {ANCHOR_FILE_LEN} bytes",
            bytes.len()
        )));
    }
    bytes.resize(ANCHOR_FILE_LEN - 1, b' ');
    bytes.push(b'\n');

    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    file.write_all_at(&bytes, 0)?;
    if file.metadata()?.len() > bytes.len() as u64 {
        file.set_len(bytes.len() as u64)?;
    }
    if sync {
        file.sync_data()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mail.head");
        let key = MacKey::from_bytes([1; 32]);
        let anchor = Anchor::new("mail", 5, &[2; 32], "20261204", &key);
        write(&path, &anchor, false).unwrap();
        let AnchorState::Valid(read_back) = read(&path, "mail", &key).unwrap() else {
            panic!("anchor should be valid");
        };
        assert_eq!(read_back, anchor);
    }

    #[test]
    fn edited_anchor_is_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mail.head");
        let key = MacKey::from_bytes([1; 32]);
        let mut anchor = Anchor::new("mail", 5, &[2; 32], "20261204", &key);
        anchor.seq = 3;
        write(&path, &anchor, false).unwrap();
        assert!(matches!(
            read(&path, "mail", &key).unwrap(),
            AnchorState::Invalid(_)
        ));
    }

    #[test]
    fn anchor_under_other_key_is_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mail.head");
        let anchor = Anchor::new(
            "mail",
            5,
            &[2; 32],
            "20261204",
            &MacKey::from_bytes([1; 32]),
        );
        write(&path, &anchor, false).unwrap();
        let state = read(&path, "mail", &MacKey::from_bytes([3; 32])).unwrap();
        assert!(matches!(state, AnchorState::Invalid(_)));
    }
}
