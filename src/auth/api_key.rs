//! The server API's bearer key ([`ApiKey`], `--api-key-file`); join tokens are [`super::jwt`]'s.

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{KeyError, read};

/// Shortest API key accepted.
pub(crate) const MIN_API_KEY_BYTES: usize = 16;

/// The bearer key of the server API (`--api-key-file`). Only its SHA-256 digest is kept, and
/// presented keys are hashed and compared in constant time, so neither the key's bytes nor its
/// length leak through timing.
#[derive(Clone)]
pub(crate) struct ApiKey {
    digest: [u8; 32],
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

impl ApiKey {
    /// Reads the key from `path`, trimming surrounding ASCII whitespace.
    ///
    /// # Errors
    /// [`KeyError::Read`] when unreadable; [`KeyError::TooShort`] below [`MIN_API_KEY_BYTES`].
    pub(crate) fn load(path: &Path) -> Result<Self, KeyError> {
        Self::new(&read(path)?)
    }

    /// The key itself, trimmed like [`ApiKey::load`].
    ///
    /// # Errors
    /// [`KeyError::TooShort`] below [`MIN_API_KEY_BYTES`].
    pub(crate) fn new(key: &[u8]) -> Result<Self, KeyError> {
        let key = key.trim_ascii();
        if key.len() < MIN_API_KEY_BYTES {
            return Err(KeyError::TooShort {
                what: "the API key",
                min: MIN_API_KEY_BYTES,
            });
        }
        Ok(Self {
            digest: Sha256::digest(key).into(),
        })
    }

    /// Whether `presented` (the credential after `Bearer `) is this key.
    pub(crate) fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.digest.ct_eq(&presented).into()
    }
}
