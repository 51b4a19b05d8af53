//! Every rule kind, each described once: its `kind` name, the keys it takes besides the common
//! ones (with the type of each value), and how a rule's settings make its [`RuleKind`] (which
//! are required, what the others default to). Reading `kind`, the list of kinds in messages,
//! the reading of each key and the refusal of keys a kind does not take all come from
//! [`KINDS`]; a new kind is one more entry there (and its evaluation in `alerts`).

use serde::{Deserialize, Deserializer};

use super::settings::{Field, Settings, Type};
use super::{DEFAULT_LOST_EVENTS_WINDOW, DEFAULT_RATE_WINDOW, RuleKind};
use crate::config::errors::Located;
use crate::config::values::{from_str, one_of};

/// One rule kind.
pub(super) struct Kind {
    /// The value of `kind`.
    pub name: &'static str,
    /// The keys it takes besides the common ones, in the order messages list them.
    pub fields: &'static [Field],
    /// The condition, from the settings of a rule that has no key outside `fields`.
    pub build: fn(&mut Settings) -> Result<RuleKind, Located>,
}

// Keys that several kinds take, with one type wherever they appear.
const OLDER_THAN: Field = Field::new("older_than", Type::Age);
const ABOVE_PER_SECOND: Field = Field::new("above_per_second", Type::Rate);
const WINDOW: Field = Field::new("window", Type::Window);
const PORTS: Field = Field::new("ports", Type::Ports);

// Keys of one kind each.
const ABOVE_COUNT: Field = Field::new("above_count", Type::Count);
const ABOVE_BUCKET_FRACTION: Field = Field::new("above_bucket_fraction", Type::Fraction);
const ABOVE_PORT_RANGE_FRACTION: Field = Field::new("above_port_range_fraction", Type::Fraction);
const CLASSES: Field = Field::new("classes", Type::Classes);
const ABOVE_FRACTION: Field = Field::new("above_fraction", Type::Fraction);
const CAUSES: Field = Field::new("causes", Type::Causes);

pub(super) static KINDS: [Kind; 8] = [
    Kind {
        name: "close_wait_age",
        fields: &[OLDER_THAN],
        build: |s| {
            Ok(RuleKind::CloseWaitAge {
                older_than: s.required(OLDER_THAN, "\"5m\"")?,
            })
        },
    },
    Kind {
        name: "timewait_usage",
        fields: &[
            ABOVE_COUNT,
            ABOVE_BUCKET_FRACTION,
            ABOVE_PORT_RANGE_FRACTION,
        ],
        build: |s| {
            let kind = RuleKind::TimewaitUsage {
                above_count: s.get(ABOVE_COUNT),
                above_bucket_fraction: s.get(ABOVE_BUCKET_FRACTION),
                above_port_range_fraction: s.get(ABOVE_PORT_RANGE_FRACTION),
            };
            let no_threshold = RuleKind::TimewaitUsage {
                above_count: None,
                above_bucket_fraction: None,
                above_port_range_fraction: None,
            };
            if kind == no_threshold {
                return Err(s.invalid(format!(
                    "kind = {:?} needs a threshold: add above_count, above_bucket_fraction or \
                     above_port_range_fraction, such as above_bucket_fraction = 0.8",
                    s.kind_name()
                )));
            }
            Ok(kind)
        },
    },
    Kind {
        name: "reset_rate",
        fields: &[ABOVE_PER_SECOND, CLASSES, WINDOW],
        build: |s| {
            Ok(RuleKind::ResetRate {
                above_per_second: s.rate_above_zero(ABOVE_PER_SECOND)?,
                classes: s.get(CLASSES).unwrap_or_default(),
                window: s.get(WINDOW).unwrap_or(DEFAULT_RATE_WINDOW),
            })
        },
    },
    Kind {
        name: "closed_before_accept_rate",
        fields: &[ABOVE_PER_SECOND, PORTS, WINDOW],
        build: |s| {
            Ok(RuleKind::ClosedBeforeAcceptRate {
                above_per_second: s.rate_above_zero(ABOVE_PER_SECOND)?,
                ports: s.get(PORTS).unwrap_or_default(),
                window: s.get(WINDOW).unwrap_or(DEFAULT_RATE_WINDOW),
            })
        },
    },
    Kind {
        name: "lost_events_rate",
        fields: &[ABOVE_PER_SECOND, WINDOW],
        // Any lost event is worth an alert, so the rate may be 0 and is by default.
        build: |s| {
            Ok(RuleKind::LostEventsRate {
                above_per_second: s.get(ABOVE_PER_SECOND).unwrap_or(0.0),
                window: s.get(WINDOW).unwrap_or(DEFAULT_LOST_EVENTS_WINDOW),
            })
        },
    },
    Kind {
        name: "half_open_age",
        fields: &[OLDER_THAN],
        build: |s| {
            Ok(RuleKind::HalfOpenAge {
                older_than: s.required(OLDER_THAN, "\"30s\"")?,
            })
        },
    },
    Kind {
        name: "accept_queue_usage",
        fields: &[ABOVE_FRACTION, PORTS],
        build: |s| {
            Ok(RuleKind::AcceptQueueUsage {
                above_fraction: s.required(ABOVE_FRACTION, "0.9")?,
                ports: s.get(PORTS).unwrap_or_default(),
            })
        },
    },
    Kind {
        name: "timeout_rate",
        fields: &[ABOVE_PER_SECOND, CAUSES, WINDOW],
        build: |s| {
            Ok(RuleKind::TimeoutRate {
                above_per_second: s.rate_above_zero(ABOVE_PER_SECOND)?,
                causes: s.get(CAUSES).unwrap_or_default(),
                window: s.get(WINDOW).unwrap_or(DEFAULT_RATE_WINDOW),
            })
        },
    },
];

impl Kind {
    /// Every kind's name, as messages list them.
    pub fn names() -> String {
        let names: Vec<_> = KINDS.iter().map(|kind| kind.name).collect();
        names.join(", ")
    }
}

impl<'de> Deserialize<'de> for &'static Kind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_str(
            deserializer,
            "a rule kind, such as \"close_wait_age\"",
            |text| one_of(text, "kind", &KINDS, |kind| kind.name),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_has_one_type_in_every_kind() {
        for kind in &KINDS {
            for field in kind.fields {
                assert_eq!(Field::named(field.key), Some(*field), "{}", kind.name);
                let same = kind.fields.iter().filter(|f| f.key == field.key).count();
                assert_eq!(same, 1, "{} lists {} twice", kind.name, field.key);
            }
        }
    }

    #[test]
    fn kinds_have_their_own_names() {
        for (i, kind) in KINDS.iter().enumerate() {
            assert!(
                KINDS[..i].iter().all(|k| k.name != kind.name),
                "{}",
                kind.name
            );
            assert!(!kind.name.is_empty() && !kind.fields.is_empty());
        }
    }
}
