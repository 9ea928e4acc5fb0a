//! `--state-file`: the sessions of a single instance kept across a graceful restart.
//!
//! On shutdown, after every stream has closed, [`save`] writes what [`Registry::keep_all`]
//! returns (ids, names, token hashes, mailboxes with their event ids, TTL left) as one versioned
//! JSON document: to a temporary file beside the target, fsynced, then renamed over it, so a
//! crash mid-write leaves the previous file or none, never half of one. [`load`] reads it
//! before the server listens and removes it, so a later crash cannot bring back sessions that
//! have moved on since. A missing file is a first start; an unreadable file or an unknown
//! version is an error that stops the start, never a silent empty one.
//!
//! The file holds what lets a client resume (token hashes, unread messages), so it is private:
//! the temporary file is created anew with mode 0600 and never through a symbolic link (a
//! link planted at its name is removed, not followed), and a state file found readable by
//! group or others at start is tightened to 0600 with a warning. Tightened rather than
//! refused: files written by earlier builds are 0644, and refusing them would turn an upgrade's
//! restart into a failed start that loses every session.
//!
//! The TTL keeps running while the server is down: a session's time left is reduced by the
//! wall-clock time since `saved_at`, and sessions past it are not restored.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::identity::TokenHash;
use crate::registry::{Kept, Registry, Snapshot};

/// The format written by this build; any other is refused.
pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Document {
    version: u32,
    /// Milliseconds since the Unix epoch when the file was written.
    saved_at: u64,
    sessions: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    // Not flattened: serde's flatten buffers the fields and cannot hand a message's raw JSON on.
    snapshot: Snapshot,
    /// Hex SHA-256 of the session's token.
    token_hash: String,
    /// Milliseconds of TTL left at `saved_at`.
    ttl_left_ms: u64,
}

/// Just the version, read first so an unknown one is named as such and not as a parse error.
#[derive(Deserialize)]
struct Header {
    version: u32,
}

/// Why a state file could not be used; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the state file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("cannot write the state file {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error(
        "the state file {0} is not a switchboard state file ({1}); move it away to start empty"
    )]
    Invalid(PathBuf, String),
    #[error(
        "the state file {0} has version {1}, this build reads version {VERSION} only; move it away to start empty"
    )]
    Version(PathBuf, u32),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Writes every session of `registry` to `path` atomically; returns how many were kept.
///
/// # Errors
/// [`StateError::Write`] when the temporary file cannot be written, synced or renamed.
pub fn save(registry: &Registry, path: &Path) -> Result<usize, StateError> {
    let sessions: Vec<Entry> = registry
        .keep_all()
        .into_iter()
        .map(|kept| Entry {
            snapshot: kept.snapshot,
            token_hash: kept.token_hash.to_hex(),
            ttl_left_ms: kept.ttl_left.as_millis() as u64,
        })
        .collect();
    let count = sessions.len();
    let document = Document {
        version: VERSION,
        saved_at: now_ms(),
        sessions,
    };
    let bytes = serde_json::to_vec(&document).expect("a state document serialises");
    let write_error = |err| StateError::Write(path.to_owned(), err);
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = create_private(&temporary).map_err(write_error)?;
    file.write_all(&bytes).map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(write_error)?;
    // The rename is durable once the directory entry is; not every platform can sync a directory.
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty())
        && let Ok(dir) = std::fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
    Ok(count)
}

/// Creates `path` for writing, mode 0600, failing rather than following a symbolic link or
/// reusing a file that exists. One left at that name (a crash mid-save, or a planted link) is
/// removed first: unlinking removes the link itself, never its target.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let open = || {
        let mut options = std::fs::OpenOptions::new();
        // `create_new` is O_CREAT|O_EXCL: the open fails on any existing name, a link included.
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        options.open(path)
    };
    match open() {
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(path)?;
            open()
        }
        opened => opened,
    }
}

/// Sets an existing state file readable by group or others to 0600, with a warning.
#[cfg(unix)]
fn tighten(path: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::PermissionsExt;

    let Ok(metadata) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|err| StateError::Read(path.to_owned(), err))?;
    tracing::warn!(
        path = %path.display(),
        mode = format_args!("{mode:03o}"),
        "the state file (--state-file) was readable by others; set to 0600"
    );
    Ok(())
}

#[cfg(not(unix))]
fn tighten(_path: &Path) -> Result<(), StateError> {
    Ok(())
}

/// What [`load`] found.
#[derive(Debug, PartialEq, Eq)]
pub struct Loaded {
    /// Sessions brought back.
    pub restored: usize,
    /// Sessions whose TTL ran out while the server was down (or beyond `max_sessions`).
    pub dropped: usize,
}

/// Restores the sessions saved in `path` into `registry`, then removes the file. No file: a
/// first start, nothing restored.
///
/// # Errors
/// [`StateError::Read`] when the file exists but cannot be read, tightened or removed,
/// [`StateError::Version`] for an unknown version, [`StateError::Invalid`] for anything else
/// that is not a state document (including a token hash that is not 64 hex digits).
pub fn load(registry: &Registry, path: &Path) -> Result<Loaded, StateError> {
    tighten(path)?;
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Loaded {
                restored: 0,
                dropped: 0,
            });
        }
        Err(err) => return Err(StateError::Read(path.to_owned(), err)),
    };
    let invalid = |reason: String| StateError::Invalid(path.to_owned(), reason);
    let header: Header = serde_json::from_slice(&bytes).map_err(|err| invalid(err.to_string()))?;
    if header.version != VERSION {
        return Err(StateError::Version(path.to_owned(), header.version));
    }
    let document: Document =
        serde_json::from_slice(&bytes).map_err(|err| invalid(err.to_string()))?;
    let down_for = now_ms().saturating_sub(document.saved_at);
    let mut kept = Vec::with_capacity(document.sessions.len());
    for entry in document.sessions {
        let token_hash = TokenHash::from_hex(&entry.token_hash)
            .ok_or_else(|| invalid(format!("bad token_hash for {}", entry.snapshot.peer.id)))?;
        kept.push((entry, token_hash));
    }
    let mut loaded = Loaded {
        restored: 0,
        dropped: 0,
    };
    for (entry, token_hash) in kept {
        let Some(left) = entry
            .ttl_left_ms
            .checked_sub(down_for)
            .filter(|left| *left > 0)
        else {
            loaded.dropped += 1;
            continue;
        };
        let restored = registry.restore(Kept {
            snapshot: entry.snapshot,
            token_hash,
            ttl_left: Duration::from_millis(left),
        });
        match restored {
            Ok(()) => loaded.restored += 1,
            Err(_) => loaded.dropped += 1,
        }
    }
    std::fs::remove_file(path).map_err(|err| StateError::Read(path.to_owned(), err))?;
    Ok(loaded)
}
