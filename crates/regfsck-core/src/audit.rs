//! The audit log: every removal, written and fsync'd *before* the removal, with what is needed
//! to put it back; and `undo`, which puts it back.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::storage::EntryKind;
use crate::{Storage, StorageError};

/// Files up to this size have their content logged (links are ~71 bytes); larger ones are
/// logged by size only and cannot be restored by `undo`.
pub const MAX_LOGGED_CONTENT: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    /// About to remove `path` (written before the removal).
    Remove,
    /// The removal announced by the previous `remove` record failed; nothing was removed.
    RemoveFailed,
    /// `undo` re-created `path`.
    Restore,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedFile {
    /// Registry-relative path.
    pub path: String,
    pub size: u64,
    /// The content, when it is UTF-8 and at most [`MAX_LOGGED_CONTENT`] bytes.
    pub content: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub event: Event,
    pub run_id: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub registry: String,
    pub repository: String,
    pub check: String,
    /// The registry-relative directory removed (or restored).
    pub path: String,
    pub files: Vec<LoggedFile>,
}

impl Record {
    pub fn now() -> String {
        humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct AuditError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// An append-only JSON Lines file; each record is fsync'd before `append` returns.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let err = |source| AuditError {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn append(&self, record: &Record) -> Result<(), AuditError> {
        let mut line = serde_json::to_string(record).map_err(|e| AuditError {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push('\n');
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|source| AuditError {
                path: self.path.clone(),
                source,
            })
    }
}

/// Reads every record; a line that does not parse is an error naming its line number.
pub fn read(path: &Path) -> Result<Vec<Record>, AuditError> {
    let err = |source| AuditError {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(err)?;
    let mut out = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(err)?;
        if line.trim().is_empty() {
            continue;
        }
        let rec = serde_json::from_str(&line).map_err(|e| {
            err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line {}: {e}", n + 1),
            ))
        })?;
        out.push(rec);
    }
    Ok(out)
}

/// The files below `dir` (registry-relative), with small contents, for the audit record.
pub fn capture(storage: &dyn Storage, dir: &str) -> Result<Vec<LoggedFile>, StorageError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_string()];
    while let Some(d) = stack.pop() {
        for e in storage.list_dir(&d)?.unwrap_or_default() {
            let path = format!("{d}/{}", e.name);
            match e.kind {
                EntryKind::Dir => stack.push(path),
                EntryKind::File => {
                    // Read first: a small file's length is its size, and only a file over the
                    // limit costs a stat (a request on an object store).
                    let (size, content) = match storage.read(&path, MAX_LOGGED_CONTENT) {
                        Ok(Some(bytes)) => (bytes.len() as u64, String::from_utf8(bytes).ok()),
                        Ok(None) => continue, // gone since the listing
                        Err(StorageError::TooLarge { .. }) => {
                            (storage.stat(&path)?.map_or(0, |m| m.size), None)
                        }
                        Err(e) => return Err(e),
                    };
                    out.push(LoggedFile {
                        path,
                        size,
                        content,
                    });
                }
                EntryKind::Symlink | EntryKind::Other => {
                    return Err(StorageError::Refused {
                        path,
                        reason: "not a regular file or directory: refusing to remove".into(),
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// What `undo` did with one logged file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restored {
    pub registry: String,
    pub path: String,
    /// `restored`, or why not.
    pub outcome: String,
}

/// The removals of `run_id` that really happened (a `remove` not followed by its
/// `remove-failed`).
pub fn removals<'a>(records: &'a [Record], run_id: &str) -> Vec<&'a Record> {
    let mut out: Vec<&Record> = Vec::new();
    for r in records.iter().filter(|r| r.run_id == run_id) {
        match r.event {
            Event::Remove => out.push(r),
            Event::RemoveFailed => {
                if let Some(i) = out
                    .iter()
                    .rposition(|p| p.registry == r.registry && p.path == r.path)
                {
                    out.remove(i);
                }
            }
            Event::Restore => {}
        }
    }
    out
}

/// Opens a registry's storage by name.
pub type StorageFor<'a> = dyn Fn(&str) -> Result<Box<dyn Storage>, String> + 'a;

/// Re-creates what `run_id` removed, never overwriting anything that exists since.
/// `storage_for` gives the storage of a registry by name.
pub fn undo(
    log: &AuditLog,
    records: &[Record],
    run_id: &str,
    undo_run_id: &str,
    storage_for: &StorageFor<'_>,
) -> Vec<Restored> {
    let mut out = Vec::new();
    for rec in removals(records, run_id) {
        let storage = match storage_for(&rec.registry) {
            Ok(s) => s,
            Err(e) => {
                out.extend(rec.files.iter().map(|f| Restored {
                    registry: rec.registry.clone(),
                    path: f.path.clone(),
                    outcome: format!("not restored: cannot open the registry's storage: {e}"),
                }));
                continue;
            }
        };
        let mut restored = Vec::new();
        for f in &rec.files {
            let outcome = match &f.content {
                None => "not restorable: its content was not logged".to_string(),
                Some(content) => match storage.create_new(&f.path, content.as_bytes()) {
                    Ok(()) => {
                        restored.push(f.clone());
                        "restored".to_string()
                    }
                    Err(StorageError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::AlreadyExists =>
                    {
                        "not restored: it exists again since the removal".to_string()
                    }
                    Err(e) => format!("not restored: {e}"),
                },
            };
            out.push(Restored {
                registry: rec.registry.clone(),
                path: f.path.clone(),
                outcome,
            });
        }
        if !restored.is_empty() {
            let note = Record {
                event: Event::Restore,
                run_id: undo_run_id.to_string(),
                time: Record::now(),
                files: restored,
                ..rec.clone()
            };
            if let Err(e) = log.append(&note) {
                out.push(Restored {
                    registry: rec.registry.clone(),
                    path: rec.path.clone(),
                    outcome: format!("restored, but the audit log failed: {e}"),
                });
            }
        }
    }
    out
}
