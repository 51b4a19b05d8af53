//! Reading `[[alerts.rules]]` tables into rules: the keys every rule takes, then the kind's
//! own, checked against the kind once the whole table is read (a table's keys come in no
//! useful order, so `kind` may come last).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use toml::Spanned;

use super::AlertRule;
use super::kinds::Kind;
use super::settings::{Setting, Settings};
use crate::config::Severity;
use crate::config::errors::Located;
use crate::config::values::{Dur, LabelName, RuleName};

/// The keys every rule takes, whatever its kind.
pub(super) const COMMON_RULE_FIELDS: [&str; 6] =
    ["name", "kind", "for", "severity", "labels", "summary"];

/// A rule as written.
pub(in crate::config) struct RawRule {
    name: Spanned<RuleName>,
    kind: &'static Kind,
    for_: Option<Dur<0>>,
    severity: Option<Severity>,
    labels: Option<BTreeMap<LabelName, String>>,
    summary: Option<String>,
    /// Every other key, in the order written.
    specific: Vec<Setting>,
}

/// The rules of `[[alerts.rules]]`, each with its own name.
pub(in crate::config) fn read_rules(raw: Vec<Spanned<RawRule>>) -> Result<Vec<AlertRule>, Located> {
    let mut rules: Vec<AlertRule> = Vec::with_capacity(raw.len());
    for raw in raw {
        let name_span = raw.get_ref().name.span();
        let rule = into_rule(raw)?;
        if let Some(first) = rules.iter().position(|r| r.name == rule.name) {
            return Err(Located::new(
                name_span,
                format!(
                    "duplicate rule name {:?}, already used by alerts.rules[{first}]: give each \
                     rule its own name (a rule named like a built-in one replaces it)",
                    rule.name
                ),
            ));
        }
        rules.push(rule);
    }
    Ok(rules)
}

fn into_rule(raw: Spanned<RawRule>) -> Result<AlertRule, Located> {
    let rule_span = raw.span();
    let raw = raw.into_inner();
    let mut settings = Settings::new(raw.kind, rule_span, raw.specific)?;
    let condition = (raw.kind.build)(&mut settings)?;
    Ok(AlertRule {
        name: raw.name.into_inner().0,
        for_: raw.for_.map_or(Duration::ZERO, |d| d.0),
        severity: raw.severity.unwrap_or_default(),
        labels: raw
            .labels
            .map(|labels| labels.into_iter().map(|(k, v)| (k.0, v)).collect())
            .unwrap_or_default(),
        summary: raw.summary,
        kind: condition,
    })
}

impl<'de> Deserialize<'de> for RawRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RuleVisitor)
    }
}

struct RuleVisitor;

impl<'de> Visitor<'de> for RuleVisitor {
    type Value = RawRule;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a rule table, such as { name = \"TcpCloseWaitStuck\", kind = \"close_wait_age\", older_than = \"5m\" }")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRule, A::Error> {
        let (mut name, mut kind, mut for_, mut severity, mut labels, mut summary) =
            (None, None, None, None, None, None);
        let mut specific = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "name" => name = Some(map.next_value()?),
                "kind" => kind = Some(map.next_value()?),
                "for" => for_ = Some(map.next_value()?),
                "severity" => severity = Some(map.next_value()?),
                "labels" => labels = Some(map.next_value()?),
                "summary" => summary = Some(map.next_value()?),
                _ => specific.push(Setting::read(key, &mut map)?),
            }
        }
        let name = name.ok_or_else(|| {
            de::Error::custom(
                "missing field `name`: add one, such as name = \"TcpCloseWaitStuck\" \
                 (it becomes the alertname label)",
            )
        })?;
        let kind = kind.ok_or_else(|| {
            de::Error::custom(format!(
                "missing field `kind`: add kind = one of {}",
                Kind::names()
            ))
        })?;
        Ok(RawRule {
            name,
            kind,
            for_,
            severity,
            labels,
            summary,
            specific,
        })
    }
}
