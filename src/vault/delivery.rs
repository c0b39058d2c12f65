//! Credentials for a run: decrypted, audited, rendered in the policy's format
//! and written into the pipe whose read end the child inherits.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::thread::JoinHandle;

use zeroize::Zeroizing;

use super::{VaultError, audit_access, open_audited};
use crate::audit::AuditLog;
use crate::context::Context;
use crate::policy::{CredentialFormat, CredentialsPolicy};

/// Decrypts the required and optional keys of `creds`, audits each read as
/// CREDENTIAL_ACCESS (purpose `delivery`) and returns them rendered in the
/// policy's format. Missing required keys fail with an error naming them all.
pub fn deliver(
    context: &Context,
    creds: &CredentialsPolicy,
    app: &str,
    run_id: &str,
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let mut vault = open_audited(context, app, run_id)?;

    let missing: Vec<String> = creds
        .keys
        .iter()
        .filter(|key| vault.file().find(&creds.service, key).is_none())
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(VaultError::MissingRequired {
            service: creds.service.clone(),
            keys: missing,
        });
    }

    let mut values = Vec::new();
    for key in &creds.keys {
        values.push((key.clone(), vault.get(&creds.service, key)?));
    }
    for key in &creds.optional {
        if vault.file().find(&creds.service, key).is_some() {
            values.push((key.clone(), vault.get(&creds.service, key)?));
        }
    }
    for (key, _) in &values {
        vault.mark_access(&creds.service, key);
    }
    vault.save()?;
    drop(vault);

    let log = AuditLog::open(context, app, run_id)?;
    for (key, _) in &values {
        audit_access(&log, &creds.service, key, "delivery")?;
    }
    tracing::info!(app, run_id, service = %creds.service, count = values.len(), "credentials decrypted for delivery");
    Ok(render(creds.format, &values))
}

/// Renders values as dotenv lines or as one JSON object.
///
/// Dotenv values are single-quoted when they hold no `'` (literal in
/// python-dotenv and Node's dotenv, even across lines), and otherwise
/// double-quoted with `\\`, `\"`, `\n` and `\r` escaped, as python-dotenv reads them.
pub fn render(
    format: CredentialFormat,
    values: &[(String, Zeroizing<String>)],
) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    match format {
        CredentialFormat::Dotenv => {
            for (key, value) in values {
                out.extend_from_slice(key.as_bytes());
                out.push(b'=');
                if !value.contains('\'') {
                    out.push(b'\'');
                    out.extend_from_slice(value.as_bytes());
                    out.push(b'\'');
                } else {
                    out.push(b'"');
                    for c in value.chars() {
                        match c {
                            '\\' => out.extend_from_slice(b"\\\\"),
                            '"' => out.extend_from_slice(b"\\\""),
                            '\n' => out.extend_from_slice(b"\\n"),
                            '\r' => out.extend_from_slice(b"\\r"),
                            other => {
                                let mut buffer = [0u8; 4];
                                out.extend_from_slice(other.encode_utf8(&mut buffer).as_bytes());
                            }
                        }
                    }
                    out.push(b'"');
                }
                out.push(b'\n');
            }
        }
        CredentialFormat::Json => {
            let map: serde_json::Map<String, serde_json::Value> = values
                .iter()
                .map(|(key, value)| (key.clone(), serde_json::Value::String(value.to_string())))
                .collect();
            let mut text = Zeroizing::new(serde_json::Value::Object(map).to_string());
            out.extend_from_slice(text.as_bytes());
            out.push(b'\n');
            // `to_string` allocated a plain copy, so wipe it before it is freed.
            zeroize::Zeroize::zeroize(&mut *text);
        }
    }
    out
}

/// Creates a close-on-exec pipe and a thread that writes `payload` into it and
/// closes the write end, so the reader gets everything, then EOF, even when
/// the payload is larger than the pipe buffer. Returns the read end and the
/// thread, which returns the write error if the reader went away early.
pub fn spawn_writer(
    payload: Zeroizing<Vec<u8>>,
) -> std::io::Result<(OwnedFd, JoinHandle<std::io::Result<()>>)> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let handle = std::thread::Builder::new()
        .name("credential-writer".into())
        .spawn(move || {
            let mut pipe = std::fs::File::from(write_end);
            let written = pipe.write_all(&payload);
            drop(payload);
            drop(pipe);
            written
        })?;
    Ok((read_end, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> Vec<(String, Zeroizing<String>)> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), Zeroizing::new((*value).to_owned())))
            .collect()
    }

    #[test]
    fn dotenv_render_parses_back() {
        let input = values(&[
            ("A", "plain"),
            ("B", "it's \"quoted\"\\n"),
            ("C", "line1\nline2"),
            ("D", "${HOME} #x"),
        ]);
        let rendered = render(CredentialFormat::Dotenv, &input);
        let parsed = super::super::dotenv::parse(&rendered);
        for (key, value) in &input {
            let found = parsed
                .entries
                .iter()
                .find(|entry| &entry.key == key)
                .map(|entry| entry.value.as_str());
            assert_eq!(found, Some(value.as_str()), "key {key}");
        }
    }

    #[test]
    fn json_render() {
        let rendered = render(CredentialFormat::Json, &values(&[("A", "x\"y")]));
        let parsed: serde_json::Value = serde_json::from_slice(&rendered).unwrap();
        assert_eq!(parsed["A"], "x\"y");
    }

    #[test]
    fn writer_delivers_more_than_pipe_buffer() {
        let payload = Zeroizing::new(vec![b'x'; 1 << 20]);
        let (read_end, handle) = spawn_writer(payload).unwrap();
        let mut received = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(read_end), &mut received).unwrap();
        handle.join().unwrap().unwrap();
        assert_eq!(received.len(), 1 << 20);
    }
}
