//! The values a configuration holds, each checked as it is parsed: counts within bounds,
//! fractions, rates, durations with units, the ring buffer's size, addresses, URLs, rule and
//! label names, severities, reset classes and timeout causes.
//!
//! Each type validates inside its visitor: toml attaches the span of the value being visited to
//! an error raised there, down to one element of an array.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::load::RingBufferSize;
use crate::track::{EndCause, ResetClass};

/// An alert's `severity` label: any text but the empty one (Alertmanager takes any UTF-8 label
/// value, and an empty label is no label at all).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Severity(String);

/// A severity was empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("empty severity: write one, such as \"warning\" or \"critical\"")]
pub struct EmptySeverity;

impl Severity {
    /// `text` as a severity, unless it is empty.
    pub fn new(text: impl Into<String>) -> Result<Self, EmptySeverity> {
        let text = text.into();
        if text.is_empty() {
            Err(EmptySeverity)
        } else {
            Ok(Self(text))
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// "warning": a rule's severity unless it names one.
impl Default for Severity {
    fn default() -> Self {
        Self("warning".to_owned())
    }
}

impl FromStr for Severity {
    type Err = EmptySeverity;

    fn from_str(text: &str) -> Result<Self, EmptySeverity> {
        Self::new(text)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Severity {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Severity {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl<'de> Deserialize<'de> for Severity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_str(deserializer, "a severity, such as \"warning\"", |text| {
            Self::new(text).map_err(|e| e.to_string())
        })
    }
}

/// The member of a closed set that `text` names, or an error listing the set.
pub(super) fn one_of<'a, T>(
    text: &str,
    what: &str,
    all: &'a [T],
    name: fn(&T) -> &'static str,
) -> Result<&'a T, String> {
    all.iter().find(|v| name(v) == text).ok_or_else(|| {
        let names: Vec<_> = all.iter().map(name).collect();
        format!(
            "unknown {what} {text:?}, expected one of {}",
            names.join(", ")
        )
    })
}

/// A reset class by its metric label name.
pub(super) struct Class(pub ResetClass);

impl<'de> Deserialize<'de> for Class {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_str(
            deserializer,
            "a reset class, such as \"no_socket\"",
            |text| one_of(text, "reset class", &ResetClass::ALL, |c| c.name()).map(|c| Class(*c)),
        )
    }
}

/// A connection end cause by its metric label name; only timeouts can be rated.
pub(super) struct Cause(pub EndCause);

impl<'de> Deserialize<'de> for Cause {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_str(
            deserializer,
            "a timeout cause, such as \"retransmit_timeout\"",
            |text| {
                one_of(text, "timeout cause", &EndCause::TIMEOUTS, |c| c.name()).map(|c| Cause(*c))
            },
        )
    }
}

pub(super) struct Listen(pub SocketAddr);

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_str(
            deserializer,
            "an address, such as \"127.0.0.1:9977\"",
            |text| {
                text.parse().map(Listen).map_err(|_| {
                    format!(
                        "invalid address {text:?}: expected an IP address and a port, such as \
                     127.0.0.1:9977 or [::]:9977"
                    )
                })
            },
        )
    }
}

pub(super) struct Url(pub String);

impl<'de> Deserialize<'de> for Url {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_str(
            deserializer,
            "a URL, such as \"http://alertmanager:9093\"",
            |text| {
                let host = text
                    .strip_prefix("http://")
                    .or_else(|| text.strip_prefix("https://"))
                    .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
                match host {
                    Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
                        Ok(Url(text.to_owned()))
                    }
                    _ => Err(format!(
                        "invalid URL {text:?}: expected http:// or https:// and a host, such as \
                     http://alertmanager:9093"
                    )),
                }
            },
        )
    }
}

pub(super) struct RuleName(pub String);

impl<'de> Deserialize<'de> for RuleName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_str(
            deserializer,
            "a rule name, such as \"TcpCloseWaitStuck\"",
            |text| {
                if is_identifier(text) {
                    Ok(RuleName(text.to_owned()))
                } else {
                    Err(format!(
                        "invalid rule name {text:?}: use letters, digits and underscores, not \
                     starting with a digit, such as TcpCloseWaitStuck"
                    ))
                }
            },
        )
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct LabelName(pub String);

impl<'de> Deserialize<'de> for LabelName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_str(deserializer, "a label name, such as \"team\"", |text| {
            if !is_identifier(text) {
                Err(format!(
                    "invalid label name {text:?}: use letters, digits and underscores, not \
                     starting with a digit, such as team"
                ))
            } else if text.starts_with("__") {
                Err(format!(
                    "invalid label name {text:?}: names starting with __ are reserved by Prometheus"
                ))
            } else if text == "alertname" || text == "severity" {
                // The engine sets both from the rule itself, which would silently win.
                let field = if text == "alertname" {
                    "name"
                } else {
                    "severity"
                };
                Err(format!(
                    "label {text:?} comes from the rule's `{field}`: set `{field}` instead"
                ))
            } else {
                Ok(LabelName(text.to_owned()))
            }
        })
    }
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A string checked by `parse`.
pub(super) fn from_str<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    deserializer.deserialize_str(StrVisitor { expecting, parse })
}

struct StrVisitor<T> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
}

impl<T> Visitor<'_> for StrVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        (self.parse)(text).map_err(E::custom)
    }
}

/// A file mode in octal, as chmod takes it: `"0660"`, `"660"` (a string: TOML has octal
/// integers, but `0660` written bare would be read as decimal 660 by mistake).
pub(super) struct Mode(pub u32);

/// Reads an octal file mode of permission bits only.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim(), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            format!("`{text}` is not a file mode: write permission bits in octal, e.g. \"0660\"")
        })
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_str(
            deserializer,
            "a file mode in octal, e.g. \"0660\"",
            parse_mode,
        )
        .map(Mode)
    }
}

/// Stands for "no upper bound" in [`Count`] while still fitting `u32` and `usize`.
pub(super) const U32_MAX: u64 = 0xFFFF_FFFF;

/// An integer from `MIN` to `MAX`.
pub(super) struct Count<const MIN: u64, const MAX: u64>(pub u64);

/// A port number.
pub(super) type Port = Count<1, 65535>;

/// The port numbers of a list.
pub(super) fn ports(ports: Vec<Port>) -> Vec<u16> {
    ports.into_iter().map(Count::u16).collect()
}

impl<const MIN: u64, const MAX: u64> Count<MIN, MAX> {
    pub fn usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    pub fn u32(self) -> u32 {
        u32::try_from(self.0).unwrap_or(u32::MAX)
    }

    fn u16(self) -> u16 {
        u16::try_from(self.0).unwrap_or(u16::MAX)
    }

    fn bounds() -> String {
        if MAX >= U32_MAX {
            format!("at least {MIN}")
        } else {
            format!("from {MIN} to {MAX}")
        }
    }
}

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Count<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_u64(CountVisitor::<MIN, MAX>)
            .map(Self)
    }
}

struct CountVisitor<const MIN: u64, const MAX: u64>;

impl<const MIN: u64, const MAX: u64> Visitor<'_> for CountVisitor<MIN, MAX> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an integer {}", Count::<MIN, MAX>::bounds())
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<u64, E> {
        if (MIN..=MAX).contains(&value) {
            Ok(value)
        } else if value > MAX && MAX >= U32_MAX {
            Err(E::custom(format!(
                "invalid value {value}: must be at most {MAX}"
            )))
        } else {
            Err(E::custom(format!(
                "invalid value {value}: must be {}",
                Count::<MIN, MAX>::bounds()
            )))
        }
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<u64, E> {
        u64::try_from(value).map_or_else(
            |_| {
                Err(E::custom(format!(
                    "invalid value {value}: must be {}",
                    Count::<MIN, MAX>::bounds()
                )))
            },
            |value| self.visit_u64(value),
        )
    }
}

/// A fraction in (0, 1].
pub(super) struct Fraction(pub f64);

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let visitor = NumberVisitor {
            expecting: "a fraction, such as 0.8",
            check: |value| {
                if value > 0.0 && value <= 1.0 {
                    Ok(value)
                } else {
                    Err(format!(
                        "invalid fraction {value}: must be above 0 and at most 1, such as 0.8"
                    ))
                }
            },
        };
        deserializer.deserialize_f64(visitor).map(Self)
    }
}

/// Events per second: finite, 0 or more.
pub(super) struct Rate(pub f64);

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let visitor = NumberVisitor {
            expecting: "a rate per second, such as 10",
            check: |value| {
                if value.is_finite() && value >= 0.0 {
                    Ok(value)
                } else {
                    Err(format!(
                        "invalid rate {value}: must be a number of events per second, 0 or \
                         more, such as 10"
                    ))
                }
            },
        };
        deserializer.deserialize_f64(visitor).map(Self)
    }
}

/// A number, integer or float, checked by `check`.
struct NumberVisitor {
    expecting: &'static str,
    check: fn(f64) -> Result<f64, String>,
}

impl Visitor<'_> for NumberVisitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<f64, E> {
        (self.check)(value).map_err(E::custom)
    }

    #[expect(
        clippy::cast_precision_loss,
        reason = "thresholds beyond 2^53 need no exactness"
    )]
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<f64, E> {
        self.visit_f64(value as f64)
    }

    #[expect(
        clippy::cast_precision_loss,
        reason = "thresholds beyond 2^53 need no exactness"
    )]
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<f64, E> {
        self.visit_f64(value as f64)
    }
}

/// A duration written with units ("30s", "5m", "1h 30m"), at least `MIN_MS` milliseconds.
pub(super) struct Dur<const MIN_MS: u64>(pub Duration);

impl<'de, const MIN_MS: u64> Deserialize<'de> for Dur<MIN_MS> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(DurVisitor::<MIN_MS>).map(Self)
    }
}

struct DurVisitor<const MIN_MS: u64>;

impl<const MIN_MS: u64> Visitor<'_> for DurVisitor<MIN_MS> {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration, such as \"30s\", \"5m\" or \"1h\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        let duration = humantime::parse_duration(text).map_err(|_| {
            E::custom(format!(
                "invalid duration {text:?}: expected a number with a unit such as 30s, 5m, 1h"
            ))
        })?;
        let min = Duration::from_millis(MIN_MS);
        if duration < min {
            return Err(E::custom(format!(
                "invalid duration {text:?}: must be at least {}",
                humantime::format_duration(min)
            )));
        }
        Ok(duration)
    }

    // A bare number is the likeliest mistake; say how to fix it rather than "invalid type".
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "invalid duration {value}: add a unit and quotes, such as \"{value}s\""
        )))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "invalid duration {value}: add a unit and quotes, such as \"{value}s\""
        )))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "invalid duration {value}: add a unit and quotes, such as \"{value}s\""
        )))
    }
}

/// The ring buffer's size as a string or an integer; [`RingBufferSize`] parses and checks it.
pub(super) struct RingSize(pub RingBufferSize);

impl<'de> Deserialize<'de> for RingSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RingSizeVisitor).map(Self)
    }
}

struct RingSizeVisitor;

impl Visitor<'_> for RingSizeVisitor {
    type Value = RingBufferSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"auto\" or a size, such as \"16M\", \"256K\" or 4194304")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<RingBufferSize, E> {
        RingBufferSize::bytes(value).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<RingBufferSize, E> {
        RingBufferSize::signed_bytes(value).map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<RingBufferSize, E> {
        text.parse().map_err(E::custom)
    }
}

#[cfg(test)]
mod tests;
