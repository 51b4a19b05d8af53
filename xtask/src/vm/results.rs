//! Each test's result in one guest, read from the harness's `--logfile`, and the table printed
//! per kernel.

use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed,
    Ignored,
    /// Listed on the host but never finished in the guest (a crash, a hang, a boot that never
    /// came up).
    NoResult,
}

impl Verdict {
    pub const fn label(self) -> &'static str {
        match self {
            Self::Passed => "pass",
            Self::Failed => "FAIL",
            Self::Ignored => "ignored",
            Self::NoResult => "NO RESULT",
        }
    }
}

/// Test name -> verdict.
pub type Results = BTreeMap<String, Verdict>;

/// Reads libtest's log file: one `ok NAME`, `failed NAME`, `failed: MESSAGE NAME` or
/// `ignored NAME` line per test, optionally followed by ` <TIME>`.
pub fn parse_logfile(text: &str) -> Results {
    let mut results = Results::new();
    for line in text.lines() {
        let line = match line.rfind(" <") {
            Some(at) if line.ends_with('>') => &line[..at],
            _ => line,
        };
        let (Some(word), Some(name)) = (
            line.split_whitespace().next(),
            line.split_whitespace().last(),
        ) else {
            continue;
        };
        let verdict = match word.trim_end_matches(':') {
            "ok" => Verdict::Passed,
            "failed" => Verdict::Failed,
            "ignored" => Verdict::Ignored,
            _ => continue,
        };
        results.insert(name.to_owned(), verdict);
    }
    results
}

/// Every test the host listed, with its verdict from the guest (or none); tests the guest ran
/// that the host did not list are kept too.
pub fn complete(listed: &[String], ran: &Results) -> Results {
    let mut all: Results = listed
        .iter()
        .map(|name| (name.clone(), Verdict::NoResult))
        .collect();
    all.extend(ran.iter().map(|(k, v)| (k.clone(), *v)));
    all
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub ignored: usize,
    pub no_result: usize,
}

impl Totals {
    pub fn of(results: &Results) -> Self {
        let mut t = Self::default();
        for verdict in results.values() {
            match verdict {
                Verdict::Passed => t.passed += 1,
                Verdict::Failed => t.failed += 1,
                Verdict::Ignored => t.ignored += 1,
                Verdict::NoResult => t.no_result += 1,
            }
        }
        t
    }

    pub const fn ok(self) -> bool {
        self.failed == 0 && self.no_result == 0
    }
}

/// The table for one kernel: one row per test, then the totals.
pub fn table(title: &str, results: &Results) -> String {
    use std::fmt::Write as _;
    let width = results.keys().map(String::len).max().unwrap_or(4).max(4);
    let mut out = format!("\n{title}\n{:<width$}  result\n", "test");
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{}  ------", "-".repeat(width));
    for (name, verdict) in results {
        let _ = writeln!(out, "{name:<width$}  {}", verdict.label());
    }
    let t = Totals::of(results);
    let _ = writeln!(
        out,
        "total: {} passed, {} failed, {} ignored, {} without a result",
        t.passed, t.failed, t.ignored, t.no_result
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_file_gives_each_test_its_verdict() {
        let log = "ok kernel::a::ipv4\nfailed kernel::b\nfailed: time limit kernel::c\n\
                   ignored slow::d <1.2s>\nnoise\n";
        let r = parse_logfile(log);
        assert_eq!(r["kernel::a::ipv4"], Verdict::Passed);
        assert_eq!(r["kernel::b"], Verdict::Failed);
        assert_eq!(r["kernel::c"], Verdict::Failed);
        assert_eq!(r["slow::d"], Verdict::Ignored);
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn listed_tests_without_a_verdict_have_no_result() {
        let ran = parse_logfile("ok a\n");
        let all = complete(&["a".to_owned(), "b".to_owned()], &ran);
        assert_eq!(all["b"], Verdict::NoResult);
        let t = Totals::of(&all);
        assert_eq!((t.passed, t.no_result), (1, 1));
        assert!(!t.ok());
        assert!(table("6.1", &all).contains("total: 1 passed, 0 failed, 0 ignored, 1 without"));
    }
}
