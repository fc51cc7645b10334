//! Span-keeping access to configuration, so every error names `file:line:col`.
//!
//! The runtime reads the config directory into [`SourceFile`]s, parses each
//! with toml's span-preserving parser, and hands each [`AdapterKind`] a
//! [`Section`]: its top-level table from every file. Adapters deserialize
//! entries one by one with [`Node::parse`], so one bad entry does not hide the
//! errors of the next, and the result is [`Located`]: the value plus the
//! position of each of its fields, for cross-checks (unknown connection,
//! duplicate name) that serde cannot do.
//!
//! [`AdapterKind`]: crate::AdapterKind

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, Range};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

/// One configuration file's text, with a line index for span → line:col.
#[derive(Debug)]
pub struct SourceFile {
    path: Arc<Path>,
    text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(path: impl Into<PathBuf>, text: String) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceFile {
            path: Arc::from(path.into()),
            text,
            line_starts,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The 1-based line and column (in characters) of a byte offset.
    pub fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        let col = self
            .text
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(0)
            + 1;
        Pos {
            file: self.path.clone(),
            line,
            col,
        }
    }

    /// Parse the whole file as a TOML document, reporting every syntax
    /// error toml can recover from.
    pub fn parse(&self) -> Result<Spanned<DeValue<'_>>, Vec<ConfigIssue>> {
        let (table, errors) = DeTable::parse_recoverable(&self.text);
        if errors.is_empty() {
            let span = table.span();
            Ok(Spanned::new(span, DeValue::Table(table.into_inner())))
        } else {
            Err(errors.iter().map(|e| self.issue_from_toml(e, 0)).collect())
        }
    }

    fn issue_from_toml(&self, error: &toml::de::Error, base: usize) -> ConfigIssue {
        let pos = error.span().map(|s| self.pos(s.start.max(base)));
        let mut message = error.message().trim().to_string();
        let mut hint = None;
        // toml says only "duplicate key"; its span is the key: name it.
        if message.starts_with("duplicate key")
            && let Some(key) = error
                .span()
                .and_then(|s| self.text.get(s))
                .map(|k| k.trim().trim_matches('"'))
                .filter(|k| !k.is_empty() && !message.contains('`'))
        {
            message = format!("duplicate key `{key}`");
            hint = Some(format!("`{key}` is set twice in this table; keep one"));
        }
        ConfigIssue { pos, message, hint }
    }
}

/// A position in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub file: Arc<Path>,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// One configuration problem: where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub pos: Option<Pos>,
    pub message: String,
    pub hint: Option<String>,
}

impl ConfigIssue {
    pub fn at(pos: Pos, message: impl Into<String>) -> Self {
        ConfigIssue {
            pos: Some(pos),
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pos {
            Some(pos) => write!(f, "{pos}: {}", self.message)?,
            None => write!(f, "{}", self.message)?,
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// A value in a configuration file, with the file it came from.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    file: &'a SourceFile,
    value: &'a Spanned<DeValue<'a>>,
}

impl<'a> Node<'a> {
    pub fn new(file: &'a SourceFile, value: &'a Spanned<DeValue<'a>>) -> Self {
        Node { file, value }
    }

    pub fn pos(&self) -> Pos {
        self.file.pos(self.value.span().start)
    }

    pub fn file(&self) -> &'a SourceFile {
        self.file
    }

    /// A problem at this node.
    pub fn issue(&self, message: impl Into<String>) -> ConfigIssue {
        ConfigIssue::at(self.pos(), message)
    }

    /// The value of `key` if this node is a table that has it.
    pub fn get(&self, key: &str) -> Option<Node<'a>> {
        match self.value.get_ref() {
            DeValue::Table(t) => t
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == key)
                .map(|(_, v)| Node::new(self.file, v)),
            _ => None,
        }
    }

    /// The keys of this table with their positions (empty if not a table).
    pub fn keys(&self) -> Vec<(&'a str, Pos)> {
        match self.value.get_ref() {
            DeValue::Table(t) => t
                .iter()
                .map(|(k, _)| (k.get_ref().as_ref(), self.file.pos(k.span().start)))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The elements of an array, or this node itself when it is a single
    /// table (so `[x]` and `[[x]]` are both accepted where a list is meant).
    pub fn elements(&self) -> Vec<Node<'a>> {
        match self.value.get_ref() {
            DeValue::Array(a) => a.iter().map(|v| Node::new(self.file, v)).collect(),
            _ => vec![*self],
        }
    }

    pub fn as_str(&self) -> Option<&'a str> {
        self.value.get_ref().as_str()
    }

    pub fn is_table(&self) -> bool {
        self.value.get_ref().is_table()
    }

    /// Deserialize this node, keeping the position of every field.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<Located<T>, ConfigIssue> {
        let de = ValueDeserializer::from(self.value.clone());
        match T::deserialize(de) {
            Ok(value) => {
                let mut fields = BTreeMap::new();
                collect_positions(self.file, self.value, String::new(), &mut fields);
                Ok(Located {
                    value,
                    origin: Origin {
                        entry: self.pos(),
                        fields,
                    },
                })
            }
            Err(e) => Err(self.file.issue_from_toml(&e, self.value.span().start)),
        }
    }

    /// Byte span of this node in its file.
    pub fn span(&self) -> Range<usize> {
        self.value.span()
    }
}

fn collect_positions(
    file: &SourceFile,
    value: &Spanned<DeValue<'_>>,
    prefix: String,
    out: &mut BTreeMap<String, Pos>,
) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match value.get_ref() {
        DeValue::Table(t) => {
            for (k, v) in t.iter() {
                let path = join(k.get_ref());
                out.insert(path.clone(), file.pos(v.span().start));
                collect_positions(file, v, path, out);
            }
        }
        DeValue::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                let path = join(&i.to_string());
                out.insert(path.clone(), file.pos(v.span().start));
                collect_positions(file, v, path, out);
            }
        }
        _ => {}
    }
}

/// Read a file named in the configuration (a password, a CA bundle, a
/// certificate), refusing one larger than `max` bytes with a clear error
/// rather than reading without end (`/dev/zero`, a log file by mistake).
pub fn read_named_file(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes: not the file meant here"),
        ));
    }
    Ok(bytes)
}

/// The error for a network listener whose `bind` is not written: there is
/// no default, so that no listener is open to every network unasked.
pub fn bind_required(origin: &Origin, table: &str, port: u16) -> ConfigIssue {
    origin
        .issue(
            "bind",
            format!("`{table}` needs `bind`: the address it listens on has no default"),
        )
        .with_hint(format!(
            "write bind = \"127.0.0.1:{port}\" for devices on this host, or the address of the \
             interface the devices reach (\"0.0.0.0:{port}\" for every network)"
        ))
}

/// The `config check` warning for a listener that accepts unauthenticated
/// (NoSec) datagrams on an address other than loopback; `None` on loopback.
pub fn nosec_exposure(listener: &str, bind: std::net::SocketAddr) -> Option<String> {
    (!bind.ip().is_loopback()).then(|| {
        format!(
            "warning: {listener} on {bind} accepts datagrams without authentication (NoSec) \
             from every host that can reach it; bind it to loopback or to the devices' network \
             only (see README, Exposure)"
        )
    })
}

/// Where a deserialized entry and each of its fields are in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    entry: Pos,
    fields: BTreeMap<String, Pos>,
}

impl Origin {
    /// An origin with no field positions, for values not read from a file.
    pub fn unknown(entry: Pos) -> Self {
        Origin {
            entry,
            fields: BTreeMap::new(),
        }
    }

    /// Where the entry starts.
    pub fn entry(&self) -> Pos {
        self.entry.clone()
    }

    /// Where the value of a field is, by dotted path (`point.2.address`);
    /// the entry itself when the field was not written (a default).
    pub fn field(&self, path: &str) -> Pos {
        self.fields
            .get(path)
            .cloned()
            .unwrap_or_else(|| self.entry.clone())
    }

    /// A problem with one field of this entry.
    pub fn issue(&self, path: &str, message: impl Into<String>) -> ConfigIssue {
        ConfigIssue::at(self.field(path), message)
    }
}

/// A deserialized config entry and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    pub value: T,
    pub origin: Origin,
}

impl<T> Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// A protocol's top-level table, gathered from every file that has one.
#[derive(Debug, Clone)]
pub struct Section<'a> {
    key: &'static str,
    parts: Vec<Node<'a>>,
}

impl<'a> Section<'a> {
    pub fn new(key: &'static str, parts: Vec<Node<'a>>) -> Self {
        Section { key, parts }
    }

    pub fn key(&self) -> &'static str {
        self.key
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Every entry of `[[key.sub]]` (or a single `[key.sub]`) across files,
    /// in file order.
    pub fn list(&self, sub: &str) -> Vec<Node<'a>> {
        self.parts
            .iter()
            .filter_map(|p| p.get(sub))
            .flat_map(|n| n.elements())
            .collect()
    }

    /// The one `[key.sub]` table; defining it in two files is an error.
    pub fn single(&self, sub: &str) -> Result<Option<Node<'a>>, ConfigIssue> {
        let mut found = self.parts.iter().filter_map(|p| p.get(sub));
        let first = found.next();
        if let Some(second) = found.next() {
            return Err(second
                .issue(format!("[{}.{sub}] is defined more than once", self.key))
                .with_hint(format!(
                    "the first definition is at {}",
                    first.map(|f| f.pos().to_string()).unwrap_or_default()
                )));
        }
        Ok(first)
    }

    /// Issues for keys under this section other than `expected`, and for a
    /// section that is not a table.
    pub fn unknown_keys(&self, expected: &[&str]) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        for part in &self.parts {
            if !part.is_table() {
                issues.push(part.issue(format!("`{}` must be a table", self.key)));
                continue;
            }
            for (k, pos) in part.keys() {
                if !expected.contains(&k) {
                    issues.push(
                        ConfigIssue::at(pos, format!("unknown key `{}.{k}`", self.key))
                            .with_hint(format!("expected one of: {}", expected.join(", "))),
                    );
                }
            }
        }
        issues
    }
}

/// What an adapter may look up while it builds, besides its own section.
#[derive(Debug, Clone, Default)]
pub struct BuildContext<'a> {
    /// Device profiles by file stem, first found on the profile search
    /// path (the config directory's `profiles/`, then the shipped ones).
    pub profiles: BTreeMap<String, Node<'a>>,
    /// The gateway's state directory, for adapters that persist state.
    pub state_dir: Option<&'a Path>,
    /// The profiles looked up, for `config check` to say where each came from.
    used: std::cell::RefCell<std::collections::BTreeSet<String>>,
}

impl<'a> BuildContext<'a> {
    pub fn profile(&self, name: &str) -> Option<Node<'a>> {
        let found = self.profiles.get(name).copied();
        if found.is_some() {
            self.used.borrow_mut().insert(name.to_string());
        }
        found
    }

    /// The profiles adapters used, each with the file it came from.
    pub fn used_profiles(&self) -> Vec<(String, Pos)> {
        self.used
            .borrow()
            .iter()
            .filter_map(|name| Some((name.clone(), self.profiles.get(name)?.pos())))
            .collect()
    }
}

/// A duration written as a number and a unit: `"500ms"`, `"1s"`, `"2m"`,
/// `"1h"`, `"1.5s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("invalid duration `{s}`: expected a number and a unit such as \"500ms\", \"1s\", \"2m\""))?;
        let scale = match unit.trim() {
            "ms" => 0.001,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "" => {
                return Err(format!(
                    "invalid duration `{s}`: missing unit (ms, s, m or h), e.g. \"{s}s\""
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration `{s}`: unknown unit `{other}`; use ms, s, m or h"
                ));
            }
        };
        let secs = number * scale;
        if !secs.is_finite() || secs > 1e9 {
            return Err(format!("invalid duration `{s}`: too large"));
        }
        Ok(ConfigDuration(Duration::from_secs_f64(secs)))
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ConfigDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Deref for ConfigDuration {
    type Target = Duration;
    fn deref(&self) -> &Duration {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Device {
        name: String,
        poll: ConfigDuration,
    }

    fn file(text: &str) -> SourceFile {
        SourceFile::new("conf.d/a.toml", text.to_string())
    }

    #[test]
    fn named_files_are_read_with_a_bound() {
        let e = read_named_file(Path::new("/dev/zero"), 1024).unwrap_err();
        assert!(e.to_string().contains("larger than 1024 bytes"), "{e}");
        let dir = std::env::temp_dir().join(format!("ferrogate-named-{}", std::process::id()));
        std::fs::write(&dir, b"secret\n").unwrap();
        assert_eq!(read_named_file(&dir, 7).unwrap(), b"secret\n");
        assert!(read_named_file(&dir, 6).is_err());
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn durations() {
        assert_eq!(
            ConfigDuration::parse("500ms").unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(
            ConfigDuration::parse("1.5s").unwrap().0,
            Duration::from_millis(1500)
        );
        assert_eq!(
            ConfigDuration::parse("2m").unwrap().0,
            Duration::from_secs(120)
        );
        assert!(
            ConfigDuration::parse("5")
                .unwrap_err()
                .contains("missing unit")
        );
        assert!(
            ConfigDuration::parse("5 sec")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(ConfigDuration::parse("fast").is_err());
    }

    #[test]
    fn entry_errors_point_at_the_bad_value() {
        let f = file(
            "[[sim.device]]\nname = \"a\"\npoll = \"1s\"\n\n[[sim.device]]\nname = \"b\"\npoll = \"soon\"\n",
        );
        let doc = f.parse().unwrap();
        let root = Node::new(&f, &doc);
        let section = Section::new("sim", vec![root.get("sim").unwrap()]);
        let devices = section.list("device");
        assert_eq!(devices.len(), 2);
        let a = devices[0].parse::<Device>().unwrap();
        assert_eq!(a.name, "a");
        assert_eq!(a.poll.0, Duration::from_secs(1));
        assert_eq!(a.origin.field("poll").line, 3);
        let err = devices[1].parse::<Device>().unwrap_err();
        let pos = err.pos.unwrap();
        assert_eq!((pos.line, pos.col), (7, 8), "{}", err.message);
        assert!(err.message.contains("invalid duration"), "{}", err.message);
    }

    #[test]
    fn unknown_fields_are_reported_with_position() {
        let f = file("[[sim.device]]\nname = \"a\"\npoll = \"1s\"\npol = \"2s\"\n");
        let doc = f.parse().unwrap();
        let root = Node::new(&f, &doc);
        let device = root.get("sim").unwrap().get("device").unwrap().elements()[0];
        let err = device.parse::<Device>().unwrap_err();
        assert!(
            err.message.contains("unknown field `pol`"),
            "{}",
            err.message
        );
        assert_eq!(err.pos.unwrap().line, 4);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let f = file("a = 1\nb = \n");
        let issues = f.parse().unwrap_err();
        assert_eq!(issues[0].pos.as_ref().unwrap().line, 2);
    }

    #[test]
    fn unknown_section_keys() {
        let f = file("[sim]\ndevice = []\ndevices = []\n");
        let doc = f.parse().unwrap();
        let root = Node::new(&f, &doc);
        let section = Section::new("sim", vec![root.get("sim").unwrap()]);
        let issues = section.unknown_keys(&["device"]);
        assert_eq!(issues.len(), 1);
        assert!(issues[0].message.contains("sim.devices"));
        assert_eq!(issues[0].pos.as_ref().unwrap().line, 3);
    }
}
