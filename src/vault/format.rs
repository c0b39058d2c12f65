//! The on-disk format of the vault file, `credentials.vault`.
//!
//! The file is JSON Lines: one header line, then one line per entry. A damaged
//! line (a flipped bit that breaks the JSON, a truncated tail) costs only that
//! entry: the reader keeps it aside as damaged, reports it by line and, where
//! it can, by name, and writes it back unchanged so nothing more is lost.
//! The header records the backend of the master key, the key check value and
//! the data key sealed under the master key.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::crypto::{Argon2Cost, NONCE_LEN, Sealed};

/// Value of the header's `format` field.
pub const FORMAT_NAME: &str = "safe-exec-vault";

/// Version of the format, bound into every entry's associated data.
pub const FORMAT_VERSION: u32 = 1;

/// The vault file's header line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// Random id of this vault in hex, which names its key in the keyrings.
    pub vault_id: String,
    pub backend: BackendRecord,
    /// HMAC-SHA256 of a fixed label and the vault id under the master key, in hex.
    pub key_check: String,
    /// The data key and the audit root key, sealed under the master key.
    pub keys: SealedText,
    /// Number of entry lines that follow. A smaller count on reading means the
    /// file was truncated.
    pub entries: usize,
    pub updated: DateTime<Utc>,
}

/// Where the master key is kept, as recorded in the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum BackendRecord {
    /// An item in the Secret Service's default collection.
    SecretService,
    /// A key in the kernel's user keyring.
    Keyutils,
    /// A key file holding the key in hex.
    File { path: PathBuf },
    /// A key derived from a passphrase with argon2id.
    Passphrase {
        /// The salt, in hex.
        salt: String,
        cost: Argon2Cost,
    },
}

impl BackendRecord {
    /// Returns the name of the backend as the `--key-backend` option spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::SecretService => "secret-service",
            Self::Keyutils => "keyutils",
            Self::File { .. } => "file",
            Self::Passphrase { .. } => "passphrase",
        }
    }
}

/// A sealed value as hex text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedText {
    pub nonce: String,
    pub ciphertext: String,
}

impl SealedText {
    /// Encodes a sealed value.
    pub fn encode(sealed: &Sealed) -> Self {
        Self {
            nonce: hex::encode(sealed.nonce),
            ciphertext: hex::encode(&sealed.ciphertext),
        }
    }

    /// Decodes the hex, or returns `None` when it is invalid or the nonce has the wrong length.
    pub fn decode(&self) -> Option<Sealed> {
        let nonce: [u8; NONCE_LEN] = hex::decode(&self.nonce).ok()?.try_into().ok()?;
        let ciphertext = hex::decode(&self.ciphertext).ok()?;
        Some(Sealed { nonce, ciphertext })
    }
}

/// One credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub service: String,
    pub key: String,
    pub value: SealedText,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_access: Option<DateTime<Utc>>,
    /// The value before the last rotation, kept until the new one is confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Previous>,
}

/// A value replaced by `cred rotate` and not yet confirmed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Previous {
    pub value: SealedText,
    pub updated: DateTime<Utc>,
}

impl Entry {
    /// Returns when the entry is due for rotation, if it has a rotation period.
    pub fn rotation_due(&self) -> Option<DateTime<Utc>> {
        self.rotate_days
            .map(|days| self.updated + chrono::Duration::days(i64::from(days)))
    }
}

/// A line of the vault file.
#[derive(Debug, Clone)]
pub enum Line {
    Entry(Entry),
    /// A line that does not parse, written back unchanged.
    Damaged(DamagedLine),
}

/// A line that could not be read as an entry.
#[derive(Debug, Clone)]
pub struct DamagedLine {
    /// Line number in the file, counted from 1.
    pub number: usize,
    pub raw: String,
    /// `service/key` when the line still shows them.
    pub name: Option<String>,
    pub reason: String,
}

/// The parsed vault file.
#[derive(Debug, Clone)]
pub struct VaultFile {
    pub header: Header,
    pub lines: Vec<Line>,
    /// Set when the header counts more entries than the file holds.
    pub missing_entries: usize,
}

/// A vault file whose header cannot be read.
#[derive(Debug, Error)]
pub enum FormatError {
    #[error("the file is empty")]
    Empty,
    #[error("the header line is not a valid vault header: {0}")]
    Header(serde_json::Error),
    #[error(
        "unsupported vault format {format:?} version {version}; this safe-exec reads {FORMAT_NAME:?} version {FORMAT_VERSION}"
    )]
    Version { format: String, version: u32 },
}

impl VaultFile {
    /// Parses the file's bytes. Only a damaged header is an error, and damaged
    /// entries are kept as `Line::Damaged`.
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        let text = String::from_utf8_lossy(bytes);
        let mut lines = text
            .split('\n')
            .enumerate()
            .filter(|(_, line)| !line.is_empty());
        let (_, header_line) = lines.next().ok_or(FormatError::Empty)?;
        let header: Header = serde_json::from_str(header_line).map_err(FormatError::Header)?;
        if header.format != FORMAT_NAME || header.version != FORMAT_VERSION {
            return Err(FormatError::Version {
                format: header.format,
                version: header.version,
            });
        }

        let mut parsed = Vec::new();
        for (index, raw) in lines {
            let number = index + 1;
            match serde_json::from_str::<Entry>(raw) {
                Ok(entry) => parsed.push(Line::Entry(entry)),
                Err(err) => parsed.push(Line::Damaged(DamagedLine {
                    number,
                    raw: raw.to_owned(),
                    name: name_of_damaged(raw),
                    reason: if err.is_eof() {
                        format!("truncated entry: {err}")
                    } else {
                        format!("invalid entry: {err}")
                    },
                })),
            }
        }
        let missing_entries = header.entries.saturating_sub(parsed.len());
        Ok(Self {
            header,
            lines: parsed,
            missing_entries,
        })
    }

    /// Serialises the file, with the header's entry count and time updated.
    pub fn to_bytes(&mut self) -> Result<Vec<u8>, serde_json::Error> {
        self.header.entries = self.lines.len();
        self.header.updated = Utc::now();
        self.missing_entries = 0;
        let mut out = serde_json::to_vec(&self.header)?;
        out.push(b'\n');
        for line in &self.lines {
            match line {
                Line::Entry(entry) => out.extend(serde_json::to_vec(entry)?),
                Line::Damaged(damaged) => out.extend(damaged.raw.as_bytes()),
            }
            out.push(b'\n');
        }
        Ok(out)
    }

    /// Returns the intact entries.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.lines.iter().filter_map(|line| match line {
            Line::Entry(entry) => Some(entry),
            Line::Damaged(_) => None,
        })
    }

    /// Returns the damaged lines.
    pub fn damaged(&self) -> impl Iterator<Item = &DamagedLine> {
        self.lines.iter().filter_map(|line| match line {
            Line::Damaged(damaged) => Some(damaged),
            Line::Entry(_) => None,
        })
    }

    /// Finds an entry by service and key.
    pub fn find(&self, service: &str, key: &str) -> Option<&Entry> {
        self.entries()
            .find(|entry| entry.service == service && entry.key == key)
    }

    /// Finds an entry by service and key, for changing it.
    pub fn find_mut(&mut self, service: &str, key: &str) -> Option<&mut Entry> {
        self.lines.iter_mut().find_map(|line| match line {
            Line::Entry(entry) if entry.service == service && entry.key == key => Some(entry),
            _ => None,
        })
    }
}

/// Pulls `service` and `key` out of a line that is no longer valid JSON.
fn name_of_damaged(raw: &str) -> Option<String> {
    let field = |name: &str| {
        let start = raw.find(&format!("\"{name}\":\""))? + name.len() + 4;
        let end = raw[start..].find('"')? + start;
        Some(raw[start..end].to_owned())
    };
    Some(format!("{}/{}", field("service")?, field("key")?))
}

/// Associated data of an entry's value: format version, service and key,
/// each length-prefixed, so a ciphertext moved to another entry fails to open.
pub fn entry_aad(service: &str, key: &str, previous: bool) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    aad.extend_from_slice(if previous {
        b"safe-exec vault previous value"
    } else {
        b"safe-exec vault value"
    });
    aad.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    for part in [service, key] {
        aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

/// Associated data of the sealed data key: format version and vault id.
pub fn keys_aad(vault_id: &str) -> Vec<u8> {
    let mut aad = b"safe-exec vault keys".to_vec();
    aad.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    aad.extend_from_slice(vault_id.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_differs_per_entry() {
        assert_ne!(entry_aad("s", "ab", false), entry_aad("sa", "b", false));
        assert_ne!(entry_aad("s", "k", false), entry_aad("s", "k", true));
    }

    #[test]
    fn damaged_line_keeps_name() {
        let raw = r#"{"service":"mail","key":"TOKEN","value":{"nonce":"00"#;
        assert_eq!(name_of_damaged(raw).as_deref(), Some("mail/TOKEN"));
    }
}
