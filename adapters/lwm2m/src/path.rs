//! LwM2M paths (`/3303/0/5700`, `/3/0/6/1`) and path patterns with `*`
//! wildcards (`/3303/*/5700`) used to configure auto-observation.
//!
//! OMA-TS-LightweightM2M-Core 1.1 §6.1: object, object instance, resource and
//! resource instance ids are 16-bit; 65535 is reserved and never a valid id.

use std::fmt;
use std::str::FromStr;

/// A path to an object, an instance, a resource or a resource instance.
/// The root path `/` has no object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Path {
    ids: [u16; 4],
    len: u8,
}

/// A path string that is not an LwM2M path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LwM2M path `{text}`: {reason}")]
pub struct PathError {
    pub text: String,
    pub reason: &'static str,
}

impl Path {
    /// The root path `/`.
    pub const ROOT: Path = Path {
        ids: [0; 4],
        len: 0,
    };

    /// A path from its ids, outermost first. More than four ids, or the
    /// reserved id 65535, is refused.
    pub fn new(ids: &[u16]) -> Option<Path> {
        if ids.len() > 4 || ids.contains(&u16::MAX) {
            return None;
        }
        let mut out = Path::ROOT;
        for (slot, id) in out.ids.iter_mut().zip(ids) {
            *slot = *id;
        }
        out.len = ids.len() as u8;
        Some(out)
    }

    /// The ids of this path, outermost first.
    pub fn ids(&self) -> &[u16] {
        &self.ids[..usize::from(self.len)]
    }

    pub fn depth(&self) -> usize {
        usize::from(self.len)
    }

    pub fn object(&self) -> Option<u16> {
        self.ids().first().copied()
    }

    pub fn instance(&self) -> Option<u16> {
        self.ids().get(1).copied()
    }

    pub fn resource(&self) -> Option<u16> {
        self.ids().get(2).copied()
    }

    pub fn resource_instance(&self) -> Option<u16> {
        self.ids().get(3).copied()
    }

    /// This path with one more id, or `None` if it is already a resource
    /// instance path or `id` is reserved.
    pub fn child(&self, id: u16) -> Option<Path> {
        if self.len >= 4 || id == u16::MAX {
            return None;
        }
        let mut out = *self;
        out.ids[usize::from(self.len)] = id;
        out.len += 1;
        Some(out)
    }

    /// Whether `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &Path) -> bool {
        self.ids().starts_with(other.ids())
    }

    /// The path segments for CoAP Uri-Path options.
    pub fn segments(&self) -> Vec<String> {
        self.ids().iter().map(u16::to_string).collect()
    }

    /// Parse a path relative to `base` (SenML names: base `/3/0/` + `6/1`).
    pub fn parse(text: &str) -> Result<Path, PathError> {
        let err = |reason| PathError {
            text: text.to_string(),
            reason,
        };
        let trimmed = text.strip_prefix('/').unwrap_or(text);
        let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
        if trimmed.is_empty() {
            return Ok(Path::ROOT);
        }
        let mut ids = Vec::with_capacity(4);
        for part in trimmed.split('/') {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err("each segment must be a decimal id"));
            }
            let id: u16 = part.parse().map_err(|_| err("id larger than 65534"))?;
            ids.push(id);
        }
        if ids.len() > 4 {
            return Err(err("more than 4 segments"));
        }
        Path::new(&ids).ok_or_else(|| err("id 65535 is reserved"))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == 0 {
            return f.write_str("/");
        }
        for id in self.ids() {
            write!(f, "/{id}")?;
        }
        Ok(())
    }
}

impl FromStr for Path {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Path::parse(s)
    }
}

/// A path whose segments may be `*` (any id), e.g. `/3303/*/5700`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathPattern {
    segments: Vec<Option<u16>>,
}

impl PathPattern {
    pub fn parse(text: &str) -> Result<PathPattern, PathError> {
        let err = |reason| PathError {
            text: text.to_string(),
            reason,
        };
        let trimmed = text
            .strip_prefix('/')
            .ok_or_else(|| err("must start with `/`"))?;
        if trimmed.is_empty() {
            return Err(err("the root path cannot be observed"));
        }
        let mut segments = Vec::new();
        for part in trimmed.split('/') {
            if part == "*" {
                segments.push(None);
            } else {
                let id = Path::parse(part)?
                    .object()
                    .ok_or_else(|| err("empty segment"))?;
                segments.push(Some(id));
            }
        }
        if segments.len() > 4 {
            return Err(err("more than 4 segments"));
        }
        if segments.first() == Some(&None) {
            return Err(err("the object id cannot be `*`"));
        }
        Ok(PathPattern { segments })
    }

    /// The object this pattern is about.
    pub fn object(&self) -> Option<u16> {
        self.segments.first().copied().flatten()
    }

    /// The concrete paths this pattern names among a client's registered
    /// object instances (from its registration's object list).
    pub fn expand(&self, instances: &[Path]) -> Vec<Path> {
        let mut out = Vec::new();
        if !self.segments.contains(&None) {
            let ids: Vec<u16> = self.segments.iter().flatten().copied().collect();
            if let Some(path) = Path::new(&ids) {
                let present = instances.iter().any(|i| {
                    i.object() == path.object()
                        && (path.instance().is_none()
                            || i.instance().is_none()
                            || i.instance() == path.instance())
                });
                if present {
                    out.push(path);
                }
            }
            return out;
        }
        for inst in instances.iter().filter(|p| p.depth() == 2) {
            let mut ids = Vec::with_capacity(self.segments.len());
            let mut fits = true;
            for (i, seg) in self.segments.iter().enumerate() {
                match (seg, inst.ids().get(i)) {
                    (Some(want), Some(have)) if want != have => fits = false,
                    (Some(want), _) => ids.push(*want),
                    (None, Some(have)) => ids.push(*have),
                    // a wildcard below the instance level cannot be expanded
                    // from the object list alone
                    (None, None) => fits = false,
                }
            }
            if fits
                && let Some(p) = Path::new(&ids)
                && !out.contains(&p)
            {
                out.push(p);
            }
        }
        out
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for seg in &self.segments {
            match seg {
                Some(id) => write!(f, "/{id}")?,
                None => f.write_str("/*")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let p = Path::parse("/3/0/6/1").unwrap();
        assert_eq!(p.ids(), &[3, 0, 6, 1]);
        assert_eq!(p.to_string(), "/3/0/6/1");
        assert_eq!(Path::parse("/").unwrap(), Path::ROOT);
        assert_eq!(Path::parse("/3/0/").unwrap().to_string(), "/3/0");
        assert!(Path::parse("/3/x").is_err());
        assert!(Path::parse("/3/65535").is_err());
        assert!(Path::parse("/1/2/3/4/5").is_err());
        assert!(Path::parse("/3//0").is_err());
        assert!(Path::parse("/+3").is_err());
    }

    #[test]
    fn patterns_expand_over_instances() {
        let pat = PathPattern::parse("/3303/*/5700").unwrap();
        let instances = [
            Path::parse("/3303/0").unwrap(),
            Path::parse("/3303/2").unwrap(),
            Path::parse("/3304/0").unwrap(),
        ];
        let got: Vec<String> = pat
            .expand(&instances)
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(got, ["/3303/0/5700", "/3303/2/5700"]);
        let fixed = PathPattern::parse("/3304/0/5700").unwrap();
        assert_eq!(fixed.expand(&instances).len(), 1);
        let absent = PathPattern::parse("/3311/0/5850").unwrap();
        assert!(absent.expand(&instances).is_empty());
        assert!(PathPattern::parse("/*/0").is_err());
        assert!(PathPattern::parse("3303").is_err());
    }
}
