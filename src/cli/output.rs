//! Output for people: aligned tables, colour only on a terminal (and never
//! with NO_COLOR), relative times ("3 s ago").

use std::io::IsTerminal;

use ferrogate_sdk::Timestamp;

/// Colours, enabled only when stdout is a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    color: bool,
}

impl Style {
    pub fn detect() -> Style {
        Style {
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub fn good(&self, text: &str) -> String {
        self.paint("32", text)
    }

    pub fn bad(&self, text: &str) -> String {
        self.paint("31", text)
    }

    pub fn warn(&self, text: &str) -> String {
        self.paint("33", text)
    }

    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }

    /// `online`/`running` green, `offline`/`stopped` red, others yellow.
    pub fn state(&self, state: &str) -> String {
        match state {
            "online" | "running" | "connected" => self.good(state),
            "offline" | "stopped" | "disconnected" => self.bad(state),
            _ => self.warn(state),
        }
    }
}

/// Rows printed with columns aligned to the widest cell. Cells may carry
/// colour codes; widths count only visible characters.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| visible_len(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(visible_len(cell));
                }
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let line: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, cell)| {
                    let pad = widths
                        .get(i)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(visible_len(cell));
                    format!("{cell}{}", " ".repeat(pad))
                })
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

fn visible_len(s: &str) -> usize {
    let mut len = 0;
    let mut in_escape = false;
    for c in s.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => len += 1,
        }
    }
    len
}

/// "3 s ago", "4 min ago", "2 h ago", "5 d ago"; "-" for none.
pub fn ago(ts_ms: Option<u64>) -> String {
    let Some(ts) = ts_ms else {
        return "-".into();
    };
    let now = Timestamp::now().0;
    duration(now.saturating_sub(ts) / 1000) + " ago"
}

/// Epoch milliseconds as UTC RFC 3339 with milliseconds,
/// `2026-12-04T02:10:06.123Z` (the box's time zone is rarely the tech's).
pub fn utc(ts_ms: u64) -> String {
    let (days, ms) = (ts_ms / 86_400_000, ts_ms % 86_400_000);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// A number of seconds as "42 s", "3 min", "5 h", "2 d".
pub fn duration(secs: u64) -> String {
    match secs {
        0..=89 => format!("{secs} s"),
        90..=5399 => format!("{} min", secs / 60),
        5400..=172_799 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_on_visible_width() {
        let mut t = Table::new(&["NAME", "STATE"]);
        t.row(vec!["meter-1".into(), "\x1b[32monline\x1b[0m".into()]);
        t.row(vec!["b".into(), "offline".into()]);
        let out = t.render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "NAME     STATE");
        assert_eq!(lines[2], "b        offline");
    }

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc(1_796_349_006_123), "2026-12-04T01:50:06.123Z");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(3), "3 s");
        assert_eq!(duration(300), "5 min");
        assert_eq!(duration(7200), "2 h");
        assert_eq!(duration(3 * 86_400), "3 d");
        assert_eq!(ago(None), "-");
    }
}
