//! The audit MAC key, derived from the vault's master key.
//!
//! Writing and verifying both need it, so a user who can edit the log files
//! but cannot unlock the vault cannot recompute a valid chain. Everything in
//! the audit module takes a [`MacKey`]; only [`mac_key`] obtains it from the vault.

use std::fmt;

use zeroize::Zeroizing;

use super::AuditError;
use crate::context::Context;
use crate::vault::VaultError;

/// A 256-bit HMAC key for audit records and anchors, zeroised on drop.
#[derive(Clone)]
pub struct MacKey(Zeroizing<[u8; 32]>);

impl MacKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Wraps a key that is already in zeroising storage.
    pub fn from_zeroizing(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(bytes)
    }

    /// Returns the key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for MacKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("MacKey(..)")
    }
}

/// Obtains the audit MAC key from the vault in `context`.
///
/// Fails with [`AuditError::VaultNotInitialised`] (exit code 77) when the
/// vault does not exist, and with [`AuditError::KeyUnavailable`] (the vault
/// error's exit code, 77 for a wrong or missing master key) when it cannot
/// be unlocked.
pub fn mac_key(context: &Context) -> Result<MacKey, AuditError> {
    match crate::vault::audit_mac_key(context) {
        Ok(key) => Ok(MacKey::from_zeroizing(key)),
        Err(VaultError::NotInitialised { .. }) => Err(AuditError::VaultNotInitialised {
            vault: context.vault_dir.clone(),
        }),
        Err(err) => Err(AuditError::KeyUnavailable {
            source: Box::new(err),
        }),
    }
}
