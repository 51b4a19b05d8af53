//! The Grafana dashboard (deploy/grafana): its variables and panels, and queries that use only
//! the metrics and labels the daemon exports, each limited to the chosen instances.

use observer_testkit::promql;
use std::collections::BTreeSet;

use serde_json::Value;

use crate::metrics_contract::Query;

/// The dashboard's panels, rows included, and those inside collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let top = dashboard["panels"].as_array().expect("panels");
    top.iter()
        .chain(
            top.iter()
                .flat_map(|p| p["panels"].as_array().into_iter().flatten()),
        )
        .collect()
}

#[test]
fn dashboard_has_the_variables_and_panels() {
    let dashboard = promql::dashboard();
    assert_eq!(dashboard["schemaVersion"], 39);
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(
        dashboard.get("__inputs").is_none(),
        "the data source is chosen with the `datasource` variable"
    );

    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    let datasource = variable("datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");

    let instance = variable("instance");
    assert_eq!(instance["type"], "query");
    assert_eq!(instance["includeAll"], true);
    assert_eq!(instance["multi"], true);
    assert_eq!(instance["datasource"]["uid"], "${datasource}");
    let query = instance["query"]["query"]
        .as_str()
        .or_else(|| instance["query"].as_str())
        .unwrap();
    assert_eq!(query, "label_values(observer_build_info, instance)");
    Query::parse(query).check_contract("variable instance");

    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{title}: id reused"
        );
        let grid = &panel["gridPos"];
        assert!(
            grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24,
            "{title}: wider than the dashboard"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert!(titles.insert(title), "{title}: two panels with this title");
        assert!(
            panel["description"].as_str().is_some_and(|d| d.len() > 40),
            "{title}: says what it shows and what to do"
        );
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            if panel["type"] == "heatmap" {
                assert_eq!(target["format"], "heatmap", "{title}");
                assert!(
                    target["expr"].as_str().unwrap().starts_with(
                        "sum by (le) (increase(observer_tcp_state_duration_seconds_bucket{"
                    ),
                    "{title}"
                );
            }
        }
    }
    for state in ["CLOSE_WAIT", "TIME_WAIT"] {
        assert!(
            promql::dashboard_targets()
                .iter()
                .any(|(_, e)| e.contains(&format!("_bucket{{state=\"{state}\""))),
            "a heatmap of the time spent in {state}"
        );
    }
}

#[test]
fn dashboard_queries_use_only_exported_metrics() {
    let dashboard = promql::dashboard();
    let legends: Vec<(String, String)> = panels(&dashboard)
        .into_iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| {
            (
                t["expr"].as_str().unwrap().to_owned(),
                t["legendFormat"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();

    for (title, expr) in promql::dashboard_targets() {
        assert!(!expr.contains('\n'), "{title}: expr on more than one line");
        let parsed = Query::parse(&expr);
        parsed.check_contract(&title);
        assert!(
            parsed.selectors.iter().all(|s| s.matchers.contains(&(
                "instance".into(),
                "=~".into(),
                "$instance".into()
            ))),
            "{title}: every selector is limited to instance=~\"$instance\": {expr}"
        );
        assert!(
            parsed.ranges.iter().all(|r| r == "$__rate_interval"),
            "{title}: ranges are [$__rate_interval]: {expr}"
        );
        for (target_expr, legend) in legends.iter().filter(|(e, _)| *e == expr) {
            for label in legend
                .split("{{")
                .skip(1)
                .filter_map(|s| s.split_once("}}"))
            {
                assert!(
                    parsed.grouping.contains(label.0.trim()),
                    "{title}: legend {legend:?} names a label {target_expr} does not keep"
                );
            }
        }
    }
    for (title, query) in promql::dashboard_queries() {
        assert!(query.contains("instance=~\".*\""), "{title}: {query}");
    }
}
