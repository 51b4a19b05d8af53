//! Why a configuration was refused, and where: an error found at a byte span of the document
//! becomes a line, a column, the path of the field there (`alerts.rules[1].older_than`) and the
//! line itself with the spot underlined.

use std::fmt::Write as _;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Why the configuration was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {error}; {hint}", path.display())]
    Read {
        path: PathBuf,
        error: io::Error,
        hint: &'static str,
    },
    /// The text is not TOML, or not a valid configuration. `line` and `column` count from 1
    /// (the column in characters); `field` is the path of the offending key, such as
    /// `alerts.rules[1].older_than`, empty when there is none (a TOML syntax error); `snippet`
    /// shows the line with the spot underlined.
    #[error("{origin}:{line}:{column}: {}{message}\n{snippet}", field_prefix(.field))]
    Invalid {
        origin: String,
        line: usize,
        column: usize,
        field: String,
        message: String,
        snippet: String,
    },
}

/// An error at a span of the document, before it is placed in lines and fields.
pub(super) struct Located {
    pub span: Range<usize>,
    pub message: String,
    /// Whether the error belongs to the key rather than its value (a key that should not be
    /// there): the span then moves to the key.
    pub at_key: bool,
}

impl Located {
    pub fn new(span: Range<usize>, message: String) -> Self {
        Self {
            span,
            message,
            at_key: false,
        }
    }

    /// What toml or serde reported (syntax, an unknown key, a value the field type refused).
    pub fn toml(error: &toml::de::Error) -> Self {
        Self::new(error.span().unwrap_or(0..0), error.message().to_owned())
    }
}

impl ConfigError {
    pub(super) fn unreadable(path: &Path, error: io::Error) -> Self {
        Self::Read {
            path: path.to_owned(),
            hint: read_hint(&error),
            error,
        }
    }

    /// The error for `at` in `text`, naming the field from `tree` when there is one.
    pub(super) fn invalid(
        origin: &str,
        text: &str,
        tree: Option<&DeTable<'_>>,
        at: &Located,
    ) -> Self {
        let mut span = at.span.clone();
        let mut field = String::new();
        if let Some(found) = tree.and_then(|tree| locate(tree, span.start)) {
            if at.at_key
                && let Some(key) = found.key
            {
                span = key;
            }
            field = found.path;
        }
        let (line, column) = line_column(text, span.start);
        Self::Invalid {
            origin: origin.to_owned(),
            line,
            column,
            field,
            message: at.message.clone(),
            snippet: snippet(text, &span, line, column),
        }
    }
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

fn read_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::NotFound => {
            "create it (deploy/observer.toml is a commented example) or pass --config with the file to use"
        }
        io::ErrorKind::PermissionDenied => "make it readable by the user observer runs as",
        io::ErrorKind::InvalidData => "save it as UTF-8 text",
        io::ErrorKind::IsADirectory => "pass the path of the file itself",
        _ => "check the path, or pass --config with the file to use",
    }
}

/// The path of the deepest key or array element whose text contains `at`.
struct Found {
    path: String,
    key: Option<Range<usize>>,
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn locate(root: &DeTable<'_>, at: usize) -> Option<Found> {
    let mut best: Option<(usize, Found)> = None;
    walk_table(root, at, &mut Vec::new(), &mut best);
    best.map(|(_, found)| found)
}

fn walk_table<'a>(
    table: &'a DeTable<'_>,
    at: usize,
    path: &mut Vec<Segment<'a>>,
    best: &mut Option<(usize, Found)>,
) {
    for (key, value) in table {
        path.push(Segment::Key(key.get_ref()));
        if covers(&key.span(), at) || covers(&value.span(), at) {
            offer(path, Some(key.span()), best);
        }
        walk_value(value, at, path, best);
        path.pop();
    }
}

fn walk_value<'a>(
    value: &'a Spanned<DeValue<'_>>,
    at: usize,
    path: &mut Vec<Segment<'a>>,
    best: &mut Option<(usize, Found)>,
) {
    match value.get_ref() {
        DeValue::Table(table) => walk_table(table, at, path, best),
        DeValue::Array(array) => {
            for (i, element) in array.iter().enumerate() {
                path.push(Segment::Index(i));
                if covers(&element.span(), at) {
                    offer(path, None, best);
                }
                walk_value(element, at, path, best);
                path.pop();
            }
        }
        _ => {}
    }
}

// Table spans cover only their header, so containment alone cannot prune the walk; the
// deepest match is the most specific one.
fn offer(path: &[Segment<'_>], key: Option<Range<usize>>, best: &mut Option<(usize, Found)>) {
    if best.as_ref().is_some_and(|(depth, _)| *depth >= path.len()) {
        return;
    }
    let mut text = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) => {
                if !text.is_empty() {
                    text.push('.');
                }
                if !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    text.push_str(key);
                } else {
                    let _ = write!(text, "{key:?}");
                }
            }
            Segment::Index(i) => {
                let _ = write!(text, "[{i}]");
            }
        }
    }
    *best = Some((path.len(), Found { path: text, key }));
}

fn covers(span: &Range<usize>, at: usize) -> bool {
    span.contains(&at) || (span.is_empty() && span.start == at)
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at.min(text.len())).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// The line holding `span`, with the span underlined, in the style of compiler messages.
fn snippet(text: &str, span: &Range<usize>, line: usize, column: usize) -> String {
    let content = text
        .lines()
        .nth(line - 1)
        .unwrap_or("")
        .trim_end_matches('\r');
    let rest = content.chars().count().saturating_sub(column - 1);
    let spanned = text
        .get(span.clone())
        .map_or(1, |s| s.chars().take_while(|&c| c != '\n').count());
    let width = spanned.min(rest).max(1);
    let gutter = " ".repeat(line.to_string().len());
    format!(
        "{gutter} |\n{line} | {content}\n{gutter} | {}{}",
        " ".repeat(column - 1),
        "^".repeat(width)
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{Config, testing::error};

    #[test]
    fn unknown_top_level_field() {
        assert_eq!(
            error("[metrics]\nlisten = \"127.0.0.1:1\"\n\n[trakcer]\nmax_sockets = 2048\n"),
            "observer.toml:4:2: trakcer: unknown field `trakcer`, expected one of `metrics`, \
             `tracker`, `kernel`, `alerts`, `socket`, `workloads`"
        );
        assert_eq!(
            error("[metrics]\nlisten = \"127.0.0.1:1\"\nport = [80]\n"),
            "observer.toml:3:1: metrics.port: unknown field `port`, expected one of `listen`, \
             `ports`, `max_port_labels`, `max_workload_labels`"
        );
    }

    #[test]
    fn syntax_error() {
        assert_eq!(
            error("[metrics\nlisten = \"x\"\n"),
            "observer.toml:1:9: unclosed table, expected `]`"
        );
    }

    #[test]
    fn message_shows_the_line() {
        let error = Config::parse("[tracker]\nowner_after = \"5x\"\n", "observer.toml")
            .expect_err("accepted");
        assert_eq!(
            error.to_string(),
            "observer.toml:2:15: tracker.owner_after: invalid duration \"5x\": expected a number \
             with a unit such as 30s, 5m, 1h\n  |\n2 | owner_after = \"5x\"\n  |               ^^^^"
        );
    }

    #[test]
    fn unreadable_file() {
        let error = Config::load(Path::new("/nonexistent/observer.toml")).expect_err("read");
        assert_eq!(
            error.to_string(),
            "cannot read /nonexistent/observer.toml: No such file or directory (os error 2); \
             create it (deploy/observer.toml is a commented example) or pass --config with the \
             file to use"
        );
    }
}
