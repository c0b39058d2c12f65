//! The e-mail guard.
