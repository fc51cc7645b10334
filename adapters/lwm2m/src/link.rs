//! CoRE link format (RFC 6690, content format 40): registration payloads
//! (the client's objects and instances) and Discover answers (with their
//! attributes such as `pmin`, `pmax`, `dim`, `ver`).

use std::fmt;

use crate::path::Path;

/// One link: `</3/0/9>;pmin=1;pmax=5`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub target: String,
    pub params: Vec<LinkParam>,
}

/// A link parameter, `name`, `name=token` or `name="quoted"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkParam {
    pub name: String,
    pub value: Option<LinkValue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkValue {
    Token(String),
    Quoted(String),
}

impl LinkValue {
    pub fn as_str(&self) -> &str {
        match self {
            LinkValue::Token(s) | LinkValue::Quoted(s) => s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("link format invalid at byte {at}: {reason}")]
pub struct LinkError {
    pub at: usize,
    pub reason: &'static str,
}

impl Link {
    /// The value of parameter `name`, unquoted.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.value.as_ref().map(LinkValue::as_str))
    }

    /// The target as an LwM2M path, when it is one.
    pub fn path(&self) -> Option<Path> {
        Path::parse(&self.target).ok()
    }

    /// Parse a whole link-format document. Empty input is an empty list.
    pub fn parse_all(bytes: &[u8]) -> Result<Vec<Link>, LinkError> {
        let text = std::str::from_utf8(bytes).map_err(|e| LinkError {
            at: e.valid_up_to(),
            reason: "not UTF-8",
        })?;
        let mut parser = Parser { text, pos: 0 };
        let mut links = Vec::new();
        parser.skip_ws();
        if parser.done() {
            return Ok(links);
        }
        loop {
            links.push(parser.link()?);
            parser.skip_ws();
            if parser.done() {
                return Ok(links);
            }
            parser.expect(b',', "expected `,` between links")?;
            parser.skip_ws();
        }
    }

    /// Encode links as one document.
    pub fn emit_all(links: &[Link]) -> String {
        links
            .iter()
            .map(Link::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.target)?;
        for p in &self.params {
            write!(f, ";{}", p.name)?;
            match &p.value {
                None => {}
                Some(LinkValue::Token(t)) => write!(f, "={t}")?,
                Some(LinkValue::Quoted(q)) => {
                    f.write_str("=\"")?;
                    for c in q.chars() {
                        if c == '"' || c == '\\' {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                    f.write_str("\"")?;
                }
            }
        }
        Ok(())
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

/// Characters allowed in a parameter name and an unquoted value
/// (RFC 6690 `parmname` and `ptoken`, relaxed to what clients send).
fn is_token(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'()*+-.:/[]^_`{|}~?@".contains(&c)
}

impl Parser<'_> {
    fn done(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn err(&self, reason: &'static str) -> LinkError {
        LinkError {
            at: self.pos,
            reason,
        }
    }

    fn expect(&mut self, c: u8, reason: &'static str) -> Result<(), LinkError> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(reason))
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &str {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        self.text.get(start..self.pos).unwrap_or("")
    }

    fn link(&mut self) -> Result<Link, LinkError> {
        self.expect(b'<', "a link starts with `<`")?;
        let target = self
            .take_while(|c| c != b'>' && c != b'<' && c != b',')
            .to_string();
        self.expect(b'>', "unterminated `<` target")?;
        let mut params = Vec::new();
        while self.peek() == Some(b';') {
            self.pos += 1;
            let name = self.take_while(|c| is_token(c) && c != b'=').to_string();
            if name.is_empty() {
                return Err(self.err("empty parameter name"));
            }
            let value = if self.peek() == Some(b'=') {
                self.pos += 1;
                Some(self.value()?)
            } else {
                None
            };
            params.push(LinkParam { name, value });
        }
        Ok(Link { target, params })
    }

    fn value(&mut self) -> Result<LinkValue, LinkError> {
        if self.peek() != Some(b'"') {
            return Ok(LinkValue::Token(self.take_while(is_token).to_string()));
        }
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.text.get(self.pos..).unwrap_or("").char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(LinkValue::Quoted(out));
                }
                '\\' => match chars.next() {
                    Some((_, e)) => out.push(e),
                    None => break,
                },
                c => out.push(c),
            }
        }
        self.pos = self.text.len();
        Err(self.err("unterminated quoted string"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_payload() {
        let links =
            Link::parse_all(br#"</>;rt="oma.lwm2m";ct=110,</1>;ver=1.1,</1/0>, </3/0>"#).unwrap();
        assert_eq!(links.len(), 4);
        assert_eq!(links[0].param("rt"), Some("oma.lwm2m"));
        assert_eq!(links[0].param("ct"), Some("110"));
        assert_eq!(links[1].param("ver"), Some("1.1"));
        assert_eq!(links[3].path(), Path::parse("/3/0").ok());
    }

    #[test]
    fn quoted_values_may_hold_separators() {
        let links = Link::parse_all(br#"</a>;title="x, \"y\"; z";obs,</b>"#).unwrap();
        assert_eq!(links[0].param("title"), Some(r#"x, "y"; z"#));
        assert_eq!(links[0].params[1].value, None);
        assert_eq!(
            Link::parse_all(Link::emit_all(&links).as_bytes()).unwrap(),
            links
        );
    }

    #[test]
    fn malformed_documents_are_errors() {
        assert!(Link::parse_all(b"</1").is_err());
        assert!(Link::parse_all(b"/1>").is_err());
        assert!(Link::parse_all(b"</1>;=3").is_err());
        assert!(Link::parse_all(br#"</1>;t="open"#).is_err());
        assert!(Link::parse_all(b"</1></2>").is_err());
        assert!(Link::parse_all(b"\xff").is_err());
        assert_eq!(Link::parse_all(b"").unwrap(), vec![]);
    }
}
