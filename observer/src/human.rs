//! Numbers as a person reads them: durations, counted nouns, errno names. Every front-end that
//! writes for people shares them, so that one figure reads the same everywhere.

/// A duration in the unit a person reads best: `850ns`, `12.3µs`, `4.56ms`, `1.23s`, `2m03s`,
/// `1h02m`.
#[must_use]
pub fn human_duration(ns: u64) -> String {
    /// `value` with up to `decimals` decimals, trailing zeros dropped.
    fn trimmed(value: f64, decimals: usize, unit: &str) -> String {
        let s = format!("{value:.decimals$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.')
        } else {
            &s
        };
        format!("{s}{unit}")
    }
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let f = ns as f64;
    let secs = ns / 1_000_000_000;
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => trimmed(f / 1e3, 1, "µs"),
        1_000_000..1_000_000_000 => trimmed(f / 1e6, 2, "ms"),
        1_000_000_000..60_000_000_000 => trimmed(f / 1e9, 2, "s"),
        60_000_000_000..3_600_000_000_000 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// `1 retransmission`, `2 retransmissions`.
#[must_use]
pub fn plural(n: u32, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// The errno's symbolic name (`ETIMEDOUT`), else its number. Only errors a TCP socket
/// reports are named.
#[must_use]
pub fn error_name(errno: i32) -> String {
    let name = match errno {
        1 => "EPERM",
        5 => "EIO",
        12 => "ENOMEM",
        13 => "EACCES",
        22 => "EINVAL",
        32 => "EPIPE",
        64 => "ENONET",
        71 => "EPROTO",
        90 => "EMSGSIZE",
        100 => "ENETDOWN",
        101 => "ENETUNREACH",
        102 => "ENETRESET",
        103 => "ECONNABORTED",
        104 => "ECONNRESET",
        105 => "ENOBUFS",
        107 => "ENOTCONN",
        108 => "ESHUTDOWN",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        112 => "EHOSTDOWN",
        113 => "EHOSTUNREACH",
        129 => "EKEYREJECTED",
        _ => return errno.to_string(),
    };
    name.to_owned()
}

/// Whether standard output takes colours: a terminal, and no `NO_COLOR` with a value
/// (no-color.org: an empty one does not count).
#[must_use]
pub fn stdout_takes_color() -> bool {
    use std::io::IsTerminal as _;
    takes_color(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

fn takes_color(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(850), "850ns");
        assert_eq!(human_duration(12_300), "12.3µs");
        assert_eq!(human_duration(4_000), "4µs");
        assert_eq!(human_duration(4_561_000), "4.56ms");
        assert_eq!(human_duration(1_234_000_000), "1.23s");
        assert_eq!(human_duration(123_000_000_000), "2m03s");
        assert_eq!(human_duration(3_720_000_000_000), "1h02m");
    }

    #[test]
    fn counted_nouns_take_an_s_unless_one() {
        assert_eq!(plural(1, "probe"), "1 probe");
        assert_eq!(plural(0, "probe"), "0 probes");
        assert_eq!(plural(6, "retransmission"), "6 retransmissions");
    }

    #[test]
    fn errnos_are_named_else_numbered() {
        assert_eq!(error_name(110), "ETIMEDOUT");
        assert_eq!(error_name(111), "ECONNREFUSED");
        assert_eq!(error_name(104), "ECONNRESET");
        assert_eq!(error_name(113), "EHOSTUNREACH");
        assert_eq!(error_name(101), "ENETUNREACH");
        assert_eq!(error_name(4242), "4242");
    }

    #[test]
    fn colours_only_on_a_terminal_and_never_with_no_color_set() {
        use std::ffi::OsStr;
        assert!(takes_color(true, None));
        assert!(!takes_color(false, None));
        assert!(!takes_color(true, Some(OsStr::new("1"))));
        assert!(
            takes_color(true, Some(OsStr::new(""))),
            "an empty NO_COLOR does not count"
        );
    }
}
