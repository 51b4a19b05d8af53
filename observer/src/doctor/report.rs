//! The report as the user reads it: a table with the advice under each warning and failure,
//! then a closing sentence; or one JSON object.

use std::{collections::BTreeSet, fmt::Write as _};

use serde::Serialize;

use super::check::{Check, Feature, Status, plural};

/// One line per check, an indented `costs:` and `fix:` under each warning and failure, then
/// the closing sentence.
#[must_use]
pub fn render_text(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        // Errors can span lines (verifier output); the table keeps one line per check.
        let finding: Vec<&str> = c
            .finding
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let _ = writeln!(
            out,
            "{:<4}  {:<width$}  {}",
            c.status.word(),
            c.name,
            finding.join(" / ")
        );
        if let Some(costs) = &c.costs {
            let _ = writeln!(out, "      costs: {costs}");
        }
        if let Some(fix) = &c.fix {
            let _ = writeln!(out, "      fix: {fix}");
        }
    }
    let _ = writeln!(out, "\n{}", summary(checks));
    out
}

/// One JSON object, `{"checks": [...], "can_run": ...}`, and a newline.
pub fn render_json(checks: &[Check], can_run: bool) -> serde_json::Result<String> {
    #[derive(Serialize)]
    struct Report<'a> {
        checks: &'a [Check],
        can_run: bool,
    }
    let mut out = serde_json::to_string(&Report { checks, can_run })?;
    out.push('\n');
    Ok(out)
}

/// The closing sentence: whether observer can run, and which features are degraded.
#[must_use]
pub fn summary(checks: &[Check]) -> String {
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.name.as_str())
        .collect();
    let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
    let degraded: BTreeSet<Feature> = checks
        .iter()
        .filter(|c| c.status == Status::Warn)
        .flat_map(|c| c.degrades.iter().copied())
        .collect();
    let names: Vec<&str> = degraded.iter().map(|f| f.name()).collect();
    let features = match names.len() {
        0 if warned == 0 => "nothing is degraded".to_owned(),
        0 => format!(
            "{} (no feature known to be degraded)",
            plural(warned, "warning")
        ),
        n => format!("{} degraded: {}", plural(n, "feature"), names.join(", ")),
    };
    if failed.is_empty() {
        format!("observer can run here; {features}.")
    } else {
        format!(
            "observer cannot run here: {} failed ({}); besides, {features}.",
            plural(failed.len(), "check"),
            failed.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::{
        judge::assess,
        testing::{find, healthy},
    };

    #[test]
    fn the_text_has_one_line_per_check_and_indented_advice() {
        let mut facts = healthy();
        facts.hz = Err("unreadable".to_owned());
        let text = render_text(&assess(&facts));
        let lines: Vec<&str> = text.lines().collect();
        let hz = lines
            .iter()
            .position(|l| l.starts_with("warn  CONFIG_HZ"))
            .unwrap();
        assert!(lines[hz + 1].starts_with("      costs: TIME_WAIT entries"));
        assert!(lines[hz + 2].starts_with("      fix: `sudo modprobe configs`"));
        assert!(lines.iter().any(|l| l.starts_with("ok    kernel ")));
        assert_eq!(
            lines.last().copied(),
            Some("observer can run here; 1 feature degraded: TIME_WAIT timeout lengths.")
        );
    }

    #[test]
    fn json_has_every_field_and_nulls_for_no_advice() {
        let checks = assess(&healthy());
        let value = serde_json::to_value(&checks[0]).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "name": "kernel",
                "status": "ok",
                "finding": checks[0].finding,
                "costs": null,
                "fix": null,
            })
        );
        let mut facts = healthy();
        facts.hz = Err("unreadable".to_owned());
        let warn = serde_json::to_value(find(&assess(&facts), "CONFIG_HZ")).unwrap();
        assert_eq!(warn["status"], "warn");
        assert!(warn["costs"].is_string() && warn["fix"].is_string());
    }

    #[test]
    fn names_are_padded_to_the_longest_and_multi_line_findings_joined() {
        let checks = [
            Check::ok("a", "fine"),
            Check::fail(
                "longer",
                "verifier said:\n\n  line one  \n line two\n",
                "it costs",
                "do this",
            ),
        ];
        assert_eq!(
            render_text(&checks),
            concat!(
                "ok    a       fine\n",
                "fail  longer  verifier said: / line one / line two\n",
                "      costs: it costs\n",
                "      fix: do this\n",
                "\n",
                "observer cannot run here: 1 check failed (longer); besides, nothing is degraded.\n",
            )
        );
    }

    #[test]
    fn json_is_one_line_with_the_verdict_last() {
        let checks = [Check::warn(
            "CONFIG_HZ",
            "unknown",
            "costs",
            "fix",
            &[Feature::TimewaitTimeouts],
        )];
        assert_eq!(
            render_json(&checks, true).unwrap(),
            concat!(
                r#"{"checks":[{"name":"CONFIG_HZ","status":"warn","finding":"unknown","#,
                r#""costs":"costs","fix":"fix"}],"can_run":true}"#,
                "\n",
            )
        );
    }
}
