//! Secrets: a value that cannot be printed, and where it comes from (environment or file).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// A secret value. `Debug` and `Display` print `[redacted]`; the bytes are reachable only
/// through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where an account's key or secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Given in the config (usually as `${VAR}`).
    Inline(Secret),
    /// Read from a file (a Kubernetes secret volume), re-read when it changes.
    File(PathBuf),
}
