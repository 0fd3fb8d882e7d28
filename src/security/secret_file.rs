//! A secret kept in a file that may change while the process runs (Kubernetes swaps a mounted
//! secret's files when it is rotated): read at first use, read again once the file's
//! modification time or length changes, looked at no more than once a [`RECHECK`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// How often a request may make the file be looked at again.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Largest secret file read (a secret is a line or a few).
const MAX_BYTES: u64 = 64 * 1024;

/// What identifies one version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

/// One version of the file and its content.
type Version = (Stamp, Arc<[u8]>);

#[derive(Debug, Default)]
struct Held {
    stamp: Option<Stamp>,
    checked: Option<Instant>,
    value: Option<Arc<[u8]>>,
}

/// One secret file.
#[derive(Debug)]
pub struct SecretFile {
    path: PathBuf,
    held: Mutex<Held>,
}

impl SecretFile {
    pub fn new(path: impl Into<PathBuf>) -> SecretFile {
        SecretFile {
            path: path.into(),
            held: Mutex::new(Held::default()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's content, trimmed of surrounding whitespace (a trailing newline is usual).
    /// When the file can no longer be read, the last content read is kept (and the error
    /// logged); `Err` only when it never could be read.
    pub fn get(&self) -> Result<Arc<[u8]>, String> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let due = held.checked.is_none_or(|t| t.elapsed() >= RECHECK);
        if due || held.value.is_none() {
            held.checked = Some(Instant::now());
            match self.read_if_changed(held.stamp) {
                Ok(Some((stamp, value))) => {
                    held.stamp = Some(stamp);
                    held.value = Some(value);
                }
                Ok(None) => {}
                Err(e) if held.value.is_some() => {
                    tracing::warn!(path = %self.path.display(), error = %e, "Cannot read a secret file again; keeping the last one read");
                }
                Err(e) => return Err(e),
            }
        }
        held.value.clone().ok_or_else(|| "not read".to_string())
    }

    /// The new content when the file changed since `seen`.
    fn read_if_changed(&self, seen: Option<Stamp>) -> Result<Option<Version>, String> {
        let fail = |e: std::io::Error| format!("cannot read {}: {e}", self.path.display());
        let meta = std::fs::metadata(&self.path).map_err(fail)?;
        let stamp = Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
        };
        if seen == Some(stamp) {
            return Ok(None);
        }
        if meta.len() > MAX_BYTES {
            return Err(format!(
                "{} is larger than {MAX_BYTES} bytes: not a secret",
                self.path.display()
            ));
        }
        let bytes = std::fs::read(&self.path).map_err(fail)?;
        Ok(Some((stamp, Arc::from(bytes.trim_ascii()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_read_again_and_a_vanished_one_keeps_its_last_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let secret = SecretFile::new(&path);
        assert_eq!(&*secret.get().unwrap(), b"first");
        std::fs::write(&path, "second-longer\n").unwrap();
        // Within RECHECK the file is not looked at.
        assert_eq!(&*secret.get().unwrap(), b"first");
        secret.held.lock().unwrap().checked = None;
        assert_eq!(&*secret.get().unwrap(), b"second-longer");
        std::fs::remove_file(&path).unwrap();
        secret.held.lock().unwrap().checked = None;
        assert_eq!(&*secret.get().unwrap(), b"second-longer");
        let missing = SecretFile::new(dir.path().join("none"));
        assert!(missing.get().unwrap_err().contains("none"));
    }
}
