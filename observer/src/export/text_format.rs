//! The Prometheus text format (0.0.4), derived from the OpenMetrics text prometheus-client
//! writes, for clients that do not ask for OpenMetrics (curl, `promtool check metrics`).
//!
//! The two differ only where this matters: OpenMetrics names a counter family without its
//! `_total` suffix and ends with `# EOF`.

/// Converts OpenMetrics text (as prometheus-client encodes it) to the Prometheus text format.
#[must_use]
pub fn from_openmetrics(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut counters = Vec::new();
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.push(name);
        }
    }
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = meta {
            let name = rest.split(' ').next().unwrap_or_default();
            if counters.contains(&name) {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total");
                out.push_str(&rest[name.len()..]);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_families_get_their_suffix_and_eof_goes() {
        let om = "# HELP a_events Events.\n# TYPE a_events counter\na_events_total 3\n\
                  # HELP b Now.\n# TYPE b gauge\nb 1\n# EOF\n";
        assert_eq!(
            from_openmetrics(om),
            "# HELP a_events_total Events.\n# TYPE a_events_total counter\na_events_total 3\n\
             # HELP b Now.\n# TYPE b gauge\nb 1\n"
        );
    }
}
