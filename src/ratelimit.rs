//! Token-bucket rate limits shared by every process on the host.
