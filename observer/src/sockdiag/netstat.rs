//! The kernel's listen overflow and drop counters (`TcpExt: ListenOverflows ListenDrops`).

use std::{fs, io};

/// Read through `thread-self`: `/proc/net` is `/proc/self/net`, the namespace of the process's
/// main thread, not of a thread that has entered another namespace with `setns`.
pub const NETSTAT: &str = "/proc/thread-self/net/netstat";

const SECTION: &str = "TcpExt:";
const OVERFLOWS: &str = "ListenOverflows";
const DROPS: &str = "ListenDrops";

/// Listen counters of one network namespace, since it was created. They only grow (until
/// they wrap, which a u64 does not in practice).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListenCounters {
    /// `ListenOverflows`: a SYN or a completing handshake found the accept queue full.
    pub overflows: u64,
    /// `ListenDrops`: everything a listener dropped, overflows included (also SYNs refused
    /// when the SYN queue is full and syncookies are off, and failures to create the child).
    pub drops: u64,
}

/// Why the counters could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NetstatError {
    #[error("cannot read {NETSTAT}: {0}")]
    Read(#[source] io::Error),
    #[error("{NETSTAT} has no `TcpExt:` header line")]
    NoSection,
    #[error("{NETSTAT} line {line}: {problem}")]
    Malformed { line: usize, problem: String },
    #[error("{NETSTAT} has no TcpExt counter {0}; this kernel does not report it")]
    Missing(&'static str),
}

impl ListenCounters {
    /// The calling thread's network namespace's counters.
    pub fn of_current() -> Result<Self, NetstatError> {
        let text = fs::read_to_string(NETSTAT).map_err(NetstatError::Read)?;
        Self::parse(&text)
    }

    /// Parses the text of `/proc/net/netstat`: per section, a line of names and a line of
    /// values, both starting with the section name (`TcpExt: SyncookiesSent ...` then
    /// `TcpExt: 0 ...`). Only `TcpExt` is read; other sections may be anything.
    pub fn parse(text: &str) -> Result<Self, NetstatError> {
        let mut lines = text.lines().enumerate();
        let (index, header) = lines
            .find(|(_, line)| line.starts_with(SECTION))
            .ok_or(NetstatError::NoSection)?;
        // Line numbers count from 1, as an editor shows them; errors name the values line.
        let line = index + 2;
        let malformed = |problem: String| NetstatError::Malformed { line, problem };
        let values = match lines.next() {
            Some((_, values)) if values.starts_with(SECTION) => values,
            Some((_, other)) => {
                return Err(malformed(format!(
                    "expected the `TcpExt:` values after the header, found {:?}",
                    truncate(other)
                )));
            }
            None => {
                return Err(malformed(
                    "the file ends before the `TcpExt:` values".to_owned(),
                ));
            }
        };
        let names: Vec<&str> = header[SECTION.len()..].split_whitespace().collect();
        let values: Vec<&str> = values[SECTION.len()..].split_whitespace().collect();
        if names.len() != values.len() {
            return Err(malformed(format!(
                "{} `TcpExt:` values for {} names",
                values.len(),
                names.len()
            )));
        }
        let counter = |wanted: &'static str| {
            let at = names
                .iter()
                .position(|name| *name == wanted)
                .ok_or(NetstatError::Missing(wanted))?;
            values[at]
                .parse::<u64>()
                .map_err(|e| malformed(format!("{wanted} is {:?}, not a count: {e}", values[at])))
        };
        Ok(Self {
            overflows: counter(OVERFLOWS)?,
            drops: counter(DROPS)?,
        })
    }
}

/// Enough of a line to recognise it in an error message.
fn truncate(line: &str) -> &str {
    line.char_indices()
        .nth(60)
        .map_or(line, |(at, _)| &line[..at])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/net/netstat` of this project's kernel (6.18), copied verbatim.
    const SAMPLE: &str = include_str!("netstat-6.18.txt");

    #[test]
    fn reads_the_kernels_own_text() {
        // The sample's ListenOverflows and ListenDrops are the 23rd and 24th TcpExt values.
        let values: Vec<u64> = SAMPLE.lines().nth(1).unwrap()[SECTION.len()..]
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(
            ListenCounters::parse(SAMPLE).unwrap(),
            ListenCounters {
                overflows: values[22],
                drops: values[23],
            }
        );
    }

    #[test]
    fn finds_the_counters_wherever_they_are() {
        let text = "IpExt: InNoRoutes\nIpExt: 7\n\
                    TcpExt: ListenDrops Foo ListenOverflows\nTcpExt: 18446744073709551615 1 2\n";
        assert_eq!(
            ListenCounters::parse(text).unwrap(),
            ListenCounters {
                overflows: 2,
                drops: u64::MAX,
            }
        );
    }

    fn error(text: &str) -> String {
        ListenCounters::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_malformed_file_says_what_is_wrong_and_where() {
        assert_eq!(
            error(""),
            "/proc/thread-self/net/netstat has no `TcpExt:` header line"
        );
        assert_eq!(
            error("IpExt: A\nIpExt: 1\n"),
            "/proc/thread-self/net/netstat has no `TcpExt:` header line"
        );
        assert_eq!(
            error("IpExt: A\nIpExt: 1\nTcpExt: ListenOverflows ListenDrops\n"),
            "/proc/thread-self/net/netstat line 4: the file ends before the `TcpExt:` values"
        );
        assert_eq!(
            error("TcpExt: ListenOverflows ListenDrops\nIpExt: 1 2\n"),
            "/proc/thread-self/net/netstat line 2: expected the `TcpExt:` values after the \
             header, found \"IpExt: 1 2\""
        );
        assert_eq!(
            error("TcpExt: ListenOverflows ListenDrops\nTcpExt: 1\n"),
            "/proc/thread-self/net/netstat line 2: 1 `TcpExt:` values for 2 names"
        );
        assert_eq!(
            error("TcpExt: ListenOverflows ListenDrops\nTcpExt: 1 -2\n"),
            "/proc/thread-self/net/netstat line 2: ListenDrops is \"-2\", not a count: \
             invalid digit found in string"
        );
        assert_eq!(
            error("TcpExt: ListenOverflows\nTcpExt: 1\n"),
            "/proc/thread-self/net/netstat has no TcpExt counter ListenDrops; this kernel \
             does not report it"
        );
    }

    #[test]
    fn a_line_in_an_error_is_cut_short() {
        let long = "x".repeat(500);
        let err = error(&format!("TcpExt: ListenOverflows ListenDrops\n{long}\n"));
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn this_threads_namespace_has_counters() {
        ListenCounters::of_current().unwrap();
    }
}
