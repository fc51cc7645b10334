//! Matching ingest requests to devices: path templates
//! (`/{device}/{point}`) and device-name allow patterns (`sensor-*`).

use crate::message::split_path;

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Device,
    Point,
}

/// A path like `/ingest/{device}/{point}`: literal segments, `{device}`
/// exactly once, `{point}` at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    text: String,
    segments: Vec<Segment>,
}

/// What a template extracted from a request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMatch {
    pub device: String,
    pub point: Option<String>,
}

impl PathTemplate {
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("path template `{text}` must start with `/`"));
        }
        let segments: Vec<Segment> = split_path(text)
            .into_iter()
            .map(|s| match s.as_str() {
                "{device}" => Segment::Device,
                "{point}" => Segment::Point,
                _ => Segment::Literal(s),
            })
            .collect();
        let count = |want: &Segment| segments.iter().filter(|s| *s == want).count();
        if count(&Segment::Device) != 1 {
            return Err(format!(
                "path template `{text}` must contain `{{device}}` exactly once"
            ));
        }
        if count(&Segment::Point) > 1 {
            return Err(format!(
                "path template `{text}` may contain `{{point}}` only once"
            ));
        }
        if segments
            .iter()
            .any(|s| matches!(s, Segment::Literal(l) if l.contains(['{', '}'])))
        {
            return Err(format!(
                "path template `{text}` has an unknown placeholder; use {{device}} and {{point}}"
            ));
        }
        Ok(PathTemplate {
            text: text.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Match request path segments.
    pub fn matches(&self, path: &[String]) -> Option<PathMatch> {
        if path.len() != self.segments.len() {
            return None;
        }
        let mut device = None;
        let mut point = None;
        for (seg, part) in self.segments.iter().zip(path) {
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Device if !part.is_empty() => device = Some(part.clone()),
                Segment::Point if !part.is_empty() => point = Some(part.clone()),
                _ => return None,
            }
        }
        Some(PathMatch {
            device: device?,
            point,
        })
    }
}

/// A device-name pattern: `*` matches any run of characters, `?` one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern(Vec<char>);

impl NamePattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("an allow pattern must not be empty".into());
        }
        Ok(NamePattern(text.chars().collect()))
    }

    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        // Iterative wildcard matching with one backtrack point: linear in
        // practice, no recursion on attacker-chosen names.
        let (mut p, mut n) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            match self.0.get(p) {
                Some('*') => {
                    star = Some((p, n));
                    p += 1;
                }
                Some(c) if *c == '?' || *c == name[n] => {
                    p += 1;
                    n += 1;
                }
                _ => match star {
                    Some((sp, sn)) => {
                        p = sp + 1;
                        n = sn + 1;
                        star = Some((sp, sn + 1));
                    }
                    None => return false,
                },
            }
        }
        self.0[p..].iter().all(|c| *c == '*')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Vec<String> {
        split_path(p)
    }

    #[test]
    fn templates() {
        let t = PathTemplate::parse("/{device}/{point}").unwrap();
        assert_eq!(
            t.matches(&path("/m1/temp")),
            Some(PathMatch {
                device: "m1".into(),
                point: Some("temp".into())
            })
        );
        assert_eq!(t.matches(&path("/m1")), None);
        let t = PathTemplate::parse("/ingest/{device}").unwrap();
        assert_eq!(t.matches(&path("/ingest/m1")).unwrap().device, "m1");
        assert_eq!(t.matches(&path("/other/m1")), None);
        assert!(PathTemplate::parse("/{point}").is_err());
        assert!(PathTemplate::parse("/{device}/{device}").is_err());
        assert!(PathTemplate::parse("{device}").is_err());
        assert!(PathTemplate::parse("/{dev}/{device}").is_err());
    }

    #[test]
    fn patterns() {
        let p = NamePattern::parse("sensor-*").unwrap();
        assert!(p.matches("sensor-1"));
        assert!(p.matches("sensor-"));
        assert!(!p.matches("meter-1"));
        let p = NamePattern::parse("a?c*z").unwrap();
        assert!(p.matches("abcz"));
        assert!(p.matches("abcxyz"));
        assert!(!p.matches("acz"));
        assert!(NamePattern::parse("*").unwrap().matches(""));
        assert!(NamePattern::parse("").is_err());
        let long = "a".repeat(5000);
        assert!(!NamePattern::parse("*a*a*a*b").unwrap().matches(&long));
    }
}
