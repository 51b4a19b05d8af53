//! The PromQL of the shipped Prometheus rules (deploy/prometheus/observer-rules.yml) and
//! Grafana dashboard (deploy/grafana/observer-dashboard.json), read from the files and made
//! ready to be sent to a Prometheus as they are.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde_json::Value;

/// The rules file, relative to the repository's root.
pub const RULES_FILE: &str = "deploy/prometheus/observer-rules.yml";
/// The dashboard, relative to the repository's root.
pub const DASHBOARD_FILE: &str = "deploy/grafana/observer-dashboard.json";

/// A file of the repository, from a path relative to its root.
#[must_use]
pub fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

fn read(relative: &str) -> String {
    let path = repo_file(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The dashboard, parsed.
#[must_use]
pub fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD_FILE))
        .unwrap_or_else(|e| panic!("{DASHBOARD_FILE} is not JSON: {e}"))
}

/// (panel title, expr) of every query target of the dashboard, as written (with Grafana's
/// variables), including the panels inside collapsed rows.
#[must_use]
pub fn dashboard_targets() -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((title.to_owned(), expr.to_owned()));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut targets = Vec::new();
    walk(&dashboard()["panels"], &mut targets);
    assert!(!targets.is_empty(), "{DASHBOARD_FILE} has no query");
    targets
}

/// (panel title, expr) of every query target of the dashboard, with Grafana's variables
/// replaced for a direct Prometheus query: `$__rate_interval` by `1m`, `$instance` and
/// `$workload` by `.*`.
#[must_use]
pub fn dashboard_queries() -> Vec<(String, String)> {
    dashboard_targets()
        .into_iter()
        .map(|(title, expr)| {
            let query = expr
                .replace("$__rate_interval", "1m")
                .replace("${instance}", ".*")
                .replace("$instance", ".*")
                .replace("${workload}", ".*")
                .replace("$workload", ".*");
            assert!(
                !query.contains('$'),
                "panel {title:?}: a Grafana variable is left in {query:?}"
            );
            (title, query)
        })
        .collect()
}

/// (alert name, expr, left side of the expr's final top-level ` > `) of every rule of the
/// rules file, in file order.
pub fn rule_queries() -> Vec<(String, String, String)> {
    let text = read(RULES_FILE);
    let mut names = Vec::new();
    let mut exprs = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert:") {
            names.push(unquote(name).to_owned());
        } else if let Some(expr) = line.strip_prefix("expr:") {
            let expr = unquote(expr);
            assert!(
                !expr.is_empty() && !expr.starts_with(['|', '>']),
                "{RULES_FILE}: every expr is written on its own line, not as a block: {line:?}"
            );
            assert_eq!(
                names.len(),
                exprs.len() + 1,
                "{RULES_FILE}: expr {expr:?} does not follow an `- alert:` line of its own"
            );
            exprs.push(expr.to_owned());
        }
    }
    assert_eq!(
        names.len(),
        exprs.len(),
        "{RULES_FILE}: {} `- alert:` lines but {} exprs",
        names.len(),
        exprs.len()
    );
    assert!(!names.is_empty(), "{RULES_FILE} has no rule");
    names
        .into_iter()
        .zip(exprs)
        .map(|(name, expr)| {
            let left = query_of_comparison(&expr)
                .unwrap_or_else(|| panic!("{name}: expr {expr:?} is not `<query> > <number>`"))
                .to_owned();
            (name, expr, left)
        })
        .collect()
}

/// The alert names of the rules file, in file order.
#[must_use]
pub fn rule_names() -> Vec<String> {
    rule_queries().into_iter().map(|(name, ..)| name).collect()
}

/// A YAML scalar without its quotes (plain or single-quoted; the rules file escapes nothing).
fn unquote(value: &str) -> &str {
    let value = value.trim();
    for quote in ['\'', '"'] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            assert!(
                !inner.contains(quote) && !inner.contains('\\'),
                "{RULES_FILE}: escapes in {value} are not supported here"
            );
            return inner;
        }
    }
    value
}

/// In `<query> > <number>`, the query: what is left of the last ` > ` outside brackets and
/// strings, when a number is right of it.
fn query_of_comparison(expr: &str) -> Option<&str> {
    let mut depth = 0_u32;
    let mut quote = None;
    let mut escaped = false;
    let mut last = None;
    for (i, c) in expr.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.checked_sub(1)?,
            ' ' if depth == 0 && expr[i..].starts_with(" > ") => last = Some(i),
            _ => {}
        }
    }
    let at = last?;
    let (query, threshold) = (expr[..at].trim(), expr[at + 3..].trim());
    threshold.parse::<f64>().ok()?;
    (!query.is_empty()).then_some(query)
}
