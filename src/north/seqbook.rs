//! Per-device telemetry `seq` numbers that survive restarts.
//!
//! The book lives in memory and is saved (write, fsync, rename) to
//! `{outbox}/seq.json` before any outbox segment is deleted. On start it is
//! loaded and then raised to the highest `seq` found in the surviving
//! records, so a number is never handed out twice even if the process died
//! between two saves.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct SeqBook {
    path: PathBuf,
    last: BTreeMap<String, u64>,
    /// Values before the uncommitted assignments, to undo a failed write.
    undo: Vec<(String, Option<u64>)>,
    dirty: bool,
}

impl SeqBook {
    /// Loads the book; a missing file is an empty book, a damaged one is
    /// reported and replaced by what the records say.
    pub fn load(path: PathBuf) -> (SeqBook, Option<String>) {
        let (last, problem) = match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<BTreeMap<String, u64>>(&bytes) {
                Ok(map) => (map, None),
                Err(e) => (
                    BTreeMap::new(),
                    Some(format!(
                        "{}: unreadable seq book ({e}); seq numbers recovered from the outbox records",
                        path.display()
                    )),
                ),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => (BTreeMap::new(), None),
            Err(e) => (BTreeMap::new(), Some(format!("{}: {e}", path.display()))),
        };
        (
            SeqBook {
                path,
                last,
                undo: Vec::new(),
                dirty: false,
            },
            problem,
        )
    }

    /// Raises a device's last seq to at least `seq` (from a recovered record).
    pub fn observe(&mut self, device: &str, seq: u64) {
        let e = self.last.entry(device.to_string()).or_insert(0);
        if seq > *e {
            *e = seq;
            self.dirty = true;
        }
    }

    /// The next seq of `device` (1 for a device never seen).
    pub fn assign(&mut self, device: &str) -> u64 {
        let prev = self.last.get(device).copied();
        self.undo.push((device.to_string(), prev));
        let next = prev.unwrap_or(0) + 1;
        self.last.insert(device.to_string(), next);
        self.dirty = true;
        next
    }

    /// The assignments since the last commit are final.
    pub fn commit(&mut self) {
        self.undo.clear();
    }

    /// Forgets the assignments since the last commit (their write failed).
    pub fn rollback(&mut self) {
        while let Some((device, prev)) = self.undo.pop() {
            match prev {
                Some(v) => self.last.insert(device, v),
                None => self.last.remove(&device),
            };
        }
    }

    pub fn last(&self, device: &str) -> Option<u64> {
        self.last.get(device).copied()
    }

    /// Writes the book durably if it changed.
    pub fn save(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&self.last).map_err(io::Error::other)?;
        write_atomically(&self.path, &bytes, true)?;
        self.dirty = false;
        Ok(())
    }
}

/// Replaces `path` by `bytes` through a temporary file and a rename, so a
/// crash leaves the old or the new content, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    if sync {
        f.sync_data()?;
    }
    fs::rename(&tmp, path)?;
    if sync {
        // The rename itself must survive a power cut too.
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
    }
    Ok(())
}

/// fsyncs a directory, making created, renamed and removed entries durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assign_rollback_save_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seq.json");
        let (mut book, problem) = SeqBook::load(path.clone());
        assert!(problem.is_none());
        assert_eq!(book.assign("a"), 1);
        assert_eq!(book.assign("a"), 2);
        book.commit();
        assert_eq!(book.assign("a"), 3);
        assert_eq!(book.assign("b"), 1);
        book.rollback();
        assert_eq!((book.last("a"), book.last("b")), (Some(2), None));
        book.observe("a", 10);
        book.save().unwrap();
        let (mut again, _) = SeqBook::load(path.clone());
        assert_eq!(again.assign("a"), 11);
        fs::write(&path, b"{garbage").unwrap();
        let (_, problem) = SeqBook::load(path);
        assert!(problem.unwrap().contains("unreadable seq book"));
    }
}
