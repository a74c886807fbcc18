//! One run at a time per data root: an exclusive lock on `<root>/.regfsck/lock`.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// regfsck's own files beside the registries: the lock and the default audit log.
pub const STATE_DIR: &str = ".regfsck";

pub fn state_dir(root: &Path) -> PathBuf {
    root.join(STATE_DIR)
}

/// Held for the life of a run; the OS releases it when the process ends, however it ends.
#[derive(Debug)]
pub struct RootLock {
    _file: File,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another regfsck run holds {0}; nothing was scanned")]
    Held(PathBuf),
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RootLock {
    pub fn acquire(root: &Path) -> Result<Self, LockError> {
        let dir = state_dir(root);
        let path = dir.join("lock");
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        // The root itself must exist already: a lock never creates a data root.
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file, path }),
            Err(TryLockError::WouldBlock) => Err(LockError::Held(path)),
            Err(TryLockError::Error(e)) => Err(io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_root_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = RootLock::acquire(dir.path()).expect("first");
        assert!(matches!(
            RootLock::acquire(dir.path()),
            Err(LockError::Held(_))
        ));
        drop(first);
        RootLock::acquire(dir.path()).expect("free again");
    }
}
