//! The command journal, `state_dir/commands.journal`: the commands the
//! gateway took from the broker and the results it gave, so that
//!
//! - a command is acknowledged (PUBACK) only once it is stored here: before
//!   that the broker still has it and redelivers it;
//! - a command taken but not finished when the gateway died (kill -9,
//!   power loss, SIGTERM mid-command) is executed after the restart, or
//!   answered `expired` when its deadline passed meanwhile;
//! - a repeated id is answered with the first result across restarts
//!   (the idempotency window survives them), never executed twice.
//!
//! - a result journalled but not yet stored in the outbox when the gateway
//!   died is published after the restart (and only then marked), so the
//!   answer is not lost in that gap either.
//!
//! One JSON object per line: `{"k":"p",...}` a pending command,
//! `{"k":"d",...}` its result, `{"k":"s",...}` its result is in the outbox.
//! Each `p` and `d` line is fsynced before the caller goes on (an `s` line
//! lost to a power cut only means the result is published once more). A torn last line (crash mid-write) is skipped and counted. Opening
//! rewrites the file with only what is still needed (pending commands and
//! results younger than the window); so does an append once the file has
//! grown past [`COMPACT_AT`]. Only files: the caller decides what to do.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrogate_sdk::{CommandError, ErrorCode, Outcome, Timestamp, Value};
use serde_json::{Value as Json, json};

/// The file is rewritten when an append finds it larger than this.
pub const COMPACT_AT: u64 = 4 << 20;

/// A command taken from the broker, not yet answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub device: String,
    pub id: String,
    /// The request body as received.
    pub payload: Vec<u8>,
    /// When it was received, Unix epoch ms: its deadline counts from here.
    pub received_ms: u64,
    pub reply_to: Option<(String, Vec<u8>)>,
}

/// A command's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    pub device: String,
    pub id: String,
    pub fingerprint: u64,
    pub outcome: Outcome,
    /// When it was answered, Unix epoch ms.
    pub at_ms: u64,
    /// The result is stored in the outbox (it reaches the broker from
    /// there); `false` after a restart: publish it again.
    pub stored: bool,
}

/// What a previous run left.
#[derive(Debug, Default, PartialEq)]
pub struct Recovered {
    /// Commands taken but never answered, oldest first.
    pub pending: Vec<Pending>,
    /// Results still inside the idempotency window.
    pub done: Vec<Done>,
    /// Lines that could not be read (a torn write), skipped.
    pub damaged: usize,
}

pub struct Journal {
    path: PathBuf,
    file: File,
    bytes: u64,
    window: Duration,
}

impl Journal {
    /// Opens (creating) the journal, returns what a previous run left and
    /// rewrites the file with only that.
    pub fn open(path: &Path, window: Duration) -> io::Result<(Journal, Recovered)> {
        let recovered = read(path, window, Timestamp::now().0)?;
        let mut journal = Journal {
            path: path.to_path_buf(),
            file: rewrite(path, &recovered)?,
            bytes: 0,
            window,
        };
        journal.bytes = journal.file.metadata()?.len();
        Ok((journal, recovered))
    }

    /// Stores a command before it is acknowledged.
    pub fn pending(&mut self, p: &Pending) -> io::Result<()> {
        self.append(&pending_line(p), true)
    }

    /// Stores a command's result.
    pub fn done(&mut self, d: &Done) -> io::Result<()> {
        self.append(&done_line(d), true)
    }

    /// Notes that a result is in the outbox (not fsynced: see the module
    /// documentation).
    pub fn stored(&mut self, device: &str, id: &str) -> io::Result<()> {
        self.append(&json!({"k": "s", "device": device, "id": id}), false)
    }

    fn append(&mut self, line: &Json, sync: bool) -> io::Result<()> {
        if self.bytes > COMPACT_AT {
            let (journal, _) = Journal::open(&self.path, self.window)?;
            *self = journal;
        }
        let mut bytes = serde_json::to_vec(line).map_err(io::Error::other)?;
        bytes.push(b'\n');
        self.file.write_all(&bytes)?;
        if sync {
            self.file.sync_data()?;
        }
        self.bytes += bytes.len() as u64;
        Ok(())
    }
}

fn pending_line(p: &Pending) -> Json {
    json!({
        "k": "p",
        "device": p.device,
        "id": p.id,
        "body": String::from_utf8_lossy(&p.payload),
        "received_ms": p.received_ms,
        "reply_to": p.reply_to.as_ref().map(|(t, c)| json!([t, ferrogate_sdk::hex::encode(c)])),
    })
}

fn done_line(d: &Done) -> Json {
    let outcome = match &d.outcome {
        Ok(values) => json!({
            "ok": true,
            "values": values.iter().map(|(k, v)| (k.clone(), v.to_json())).collect::<serde_json::Map<_, _>>(),
        }),
        Err(e) => json!({"ok": false, "code": e.code.as_str(), "message": e.message}),
    };
    json!({
        "k": "d",
        "device": d.device,
        "id": d.id,
        // As a string: JSON numbers above 2^53 do not survive every reader.
        "fingerprint": d.fingerprint.to_string(),
        "outcome": outcome,
        "at_ms": d.at_ms,
        "stored": d.stored,
    })
}

fn parse_pending(j: &Json) -> Option<Pending> {
    let reply_to = match j.get("reply_to") {
        None | Some(Json::Null) => None,
        Some(r) => Some((
            r.get(0)?.as_str()?.to_string(),
            ferrogate_sdk::hex::decode(r.get(1)?.as_str()?)?,
        )),
    };
    Some(Pending {
        device: j.get("device")?.as_str()?.to_string(),
        id: j.get("id")?.as_str()?.to_string(),
        payload: j.get("body")?.as_str()?.as_bytes().to_vec(),
        received_ms: j.get("received_ms")?.as_u64()?,
        reply_to,
    })
}

fn parse_done(j: &Json) -> Option<Done> {
    let o = j.get("outcome")?;
    let outcome = if o.get("ok")?.as_bool()? {
        let mut values = BTreeMap::new();
        for (k, v) in o.get("values")?.as_object()? {
            values.insert(k.clone(), Value::from_json(v)?);
        }
        Ok(values)
    } else {
        let code = o.get("code")?.as_str()?;
        let code = *ErrorCode::ALL.iter().find(|c| c.as_str() == code)?;
        Err(CommandError::new(code, o.get("message")?.as_str()?))
    };
    Some(Done {
        device: j.get("device")?.as_str()?.to_string(),
        id: j.get("id")?.as_str()?.to_string(),
        fingerprint: j.get("fingerprint")?.as_str()?.parse().ok()?,
        outcome,
        at_ms: j.get("at_ms")?.as_u64()?,
        // Missing in journals from before the marker: they were stored.
        stored: j.get("stored").and_then(Json::as_bool).unwrap_or(true),
    })
}

/// Reads the journal: pending commands without a result, and results
/// answered within `window` of `now_ms`.
fn read(path: &Path, window: Duration, now_ms: u64) -> io::Result<Recovered> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Recovered::default()),
        Err(e) => return Err(e),
    };
    let mut pending: Vec<Pending> = Vec::new();
    let mut done: BTreeMap<(String, String), Done> = BTreeMap::new();
    let mut damaged = 0;
    for line in io::BufReader::new(file).split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let Ok(j) = serde_json::from_slice::<Json>(&line) else {
            damaged += 1;
            continue;
        };
        match j.get("k").and_then(Json::as_str) {
            Some("p") => match parse_pending(&j) {
                Some(p) => pending.push(p),
                None => damaged += 1,
            },
            Some("d") => match parse_done(&j) {
                Some(d) => {
                    pending.retain(|p| (p.device != d.device) || (p.id != d.id));
                    done.insert((d.device.clone(), d.id.clone()), d);
                }
                None => damaged += 1,
            },
            Some("s") => {
                let key = (
                    j.get("device").and_then(Json::as_str),
                    j.get("id").and_then(Json::as_str),
                );
                let (Some(device), Some(id)) = key else {
                    damaged += 1;
                    continue;
                };
                if let Some(d) = done.get_mut(&(device.to_string(), id.to_string())) {
                    d.stored = true;
                }
            }
            _ => damaged += 1,
        }
    }
    // A command redelivered by the broker may have been journalled twice.
    let mut seen = std::collections::BTreeSet::new();
    pending.retain(|p| seen.insert((p.device.clone(), p.id.clone())));
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    let mut done: Vec<Done> = done
        .into_values()
        .filter(|d| now_ms.saturating_sub(d.at_ms) < window_ms)
        .collect();
    done.sort_by_key(|d| d.at_ms);
    Ok(Recovered {
        pending,
        done,
        damaged,
    })
}

/// Writes `recovered` as the new journal (temp file, fsync, rename, fsync
/// of the directory) and returns it open for appending.
fn rewrite(path: &Path, recovered: &Recovered) -> io::Result<File> {
    let tmp = path.with_extension("journal.tmp");
    {
        let mut out = io::BufWriter::new(File::create(&tmp)?);
        for d in &recovered.done {
            serde_json::to_writer(&mut out, &done_line(d)).map_err(io::Error::other)?;
            out.write_all(b"\n")?;
        }
        for p in &recovered.pending {
            serde_json::to_writer(&mut out, &pending_line(p)).map_err(io::Error::other)?;
            out.write_all(b"\n")?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    OpenOptions::new().append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(id: &str, received_ms: u64) -> Pending {
        Pending {
            device: "d".into(),
            id: id.into(),
            payload: format!(r#"{{"id":"{id}","op":"read"}}"#).into_bytes(),
            received_ms,
            reply_to: Some(("r/responses/x".into(), vec![0, 255, 7])),
        }
    }

    fn done(id: &str, at_ms: u64, outcome: Outcome) -> Done {
        Done {
            device: "d".into(),
            id: id.into(),
            fingerprint: u64::MAX - 1,
            outcome,
            at_ms,
            stored: true,
        }
    }

    #[test]
    fn pending_commands_and_results_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commands.journal");
        let window = Duration::from_secs(600);
        let now = Timestamp::now().0;
        let ok: Outcome = Ok([("sp".to_string(), Value::Float(21.5))].into());
        let err: Outcome = Err(CommandError::new(ErrorCode::NotWritable, "read-only"));
        {
            let (mut j, r) = Journal::open(&path, window).unwrap();
            assert_eq!(r, Recovered::default());
            j.pending(&pending("a", now)).unwrap();
            j.pending(&pending("b", now)).unwrap();
            j.pending(&pending("c", now)).unwrap();
            j.done(&done("a", now, ok.clone())).unwrap();
            j.done(&done("c", now, err.clone())).unwrap();
            // Redelivered by the broker and journalled again.
            j.pending(&pending("b", now)).unwrap();
            // A result older than the window is forgotten.
            j.done(&done("old", now - 700_000, ok.clone())).unwrap();
        }
        // A torn last line, as a crash mid-write leaves it.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"k":"p","device":"d","id":"#).unwrap();
        drop(f);

        let (_j, r) = Journal::open(&path, window).unwrap();
        assert_eq!(r.pending, vec![pending("b", now)]);
        let ids: Vec<_> = r.done.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(r.done[0].outcome, ok);
        assert_eq!(r.done[1].outcome, err);
        assert_eq!(r.done[0].fingerprint, u64::MAX - 1);
        assert_eq!(r.damaged, 1);

        // Opening compacted the file: the same state, nothing more.
        let (_j, again) = Journal::open(&path, window).unwrap();
        assert_eq!(again.pending, r.pending);
        assert_eq!(again.done, r.done);
        assert_eq!(again.damaged, 0);
    }

    #[test]
    fn a_result_not_yet_in_the_outbox_is_recovered_as_unstored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commands.journal");
        let window = Duration::from_secs(600);
        let now = Timestamp::now().0;
        let ok: Outcome = Ok(BTreeMap::new());
        {
            let (mut j, _) = Journal::open(&path, window).unwrap();
            for id in ["a", "b"] {
                j.pending(&pending(id, now)).unwrap();
                j.done(&Done {
                    stored: false,
                    ..done(id, now, ok.clone())
                })
                .unwrap();
            }
            j.stored("d", "a").unwrap();
            // A crash here: b's result never reached the outbox.
        }
        let (_j, r) = Journal::open(&path, window).unwrap();
        let stored: Vec<_> = r.done.iter().map(|d| (d.id.as_str(), d.stored)).collect();
        assert_eq!(stored, [("a", true), ("b", false)]);
        assert!(r.pending.is_empty(), "answered, not to be run again");
        // Kept through the compaction of the open.
        let (_j, again) = Journal::open(&path, window).unwrap();
        assert_eq!(again.done, r.done);
    }

    #[test]
    fn hex_roundtrip() {
        assert_eq!(
            ferrogate_sdk::hex::decode(&ferrogate_sdk::hex::encode(&[0, 1, 254, 255])),
            Some(vec![0, 1, 254, 255])
        );
        assert_eq!(ferrogate_sdk::hex::decode("abc"), None);
        assert_eq!(ferrogate_sdk::hex::decode("zz"), None);
    }
}
