//! The encrypted credential vault.
