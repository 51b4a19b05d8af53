//! A rule's kind-specific settings. Each is read, before the rule's kind is known, as the type
//! its key has in [`KINDS`]; once the whole table is read, keys the kind does not take are
//! refused and the kind takes the values it builds its condition from.

use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess};
use toml::Spanned;

use super::kinds::{KINDS, Kind};
use super::read::COMMON_RULE_FIELDS;
use crate::config::errors::Located;
use crate::config::values::{Cause, Class, Count, Dur, Fraction, Port, Rate, ports};
use crate::track::{EndCause, ResetClass};

/// A key some kind takes besides the common ones, and the type of its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Field {
    pub key: &'static str,
    pub ty: Type,
}

impl Field {
    pub const fn new(key: &'static str, ty: Type) -> Self {
        Self { key, ty }
    }

    /// The field `key` names in the first kind that takes it (kinds sharing a key give it one
    /// type).
    pub fn named(key: &str) -> Option<Self> {
        KINDS
            .iter()
            .flat_map(|kind| kind.fields)
            .find(|field| field.key == key)
            .copied()
    }
}

/// How a setting is written and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Type {
    /// A duration, 0 or more ("5m").
    Age,
    /// A duration of at least 1s.
    Window,
    /// An integer, 0 or more.
    Count,
    /// A fraction in (0, 1].
    Fraction,
    /// Events per second, 0 or more.
    Rate,
    /// Port numbers.
    Ports,
    /// Reset classes by name.
    Classes,
    /// Timeout causes by name.
    Causes,
}

/// A setting's value once checked.
pub(super) enum Value {
    Duration(Duration),
    Count(u64),
    Number(f64),
    Ports(Vec<u16>),
    Classes(Vec<ResetClass>),
    Causes(Vec<EndCause>),
}

impl Type {
    /// The next value of `map`, checked as this type.
    fn read<'de, A: MapAccess<'de>>(self, map: &mut A) -> Result<Spanned<Value>, A::Error> {
        fn next<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
            map: &mut A,
            value: fn(T) -> Value,
        ) -> Result<Spanned<Value>, A::Error> {
            let read: Spanned<T> = map.next_value()?;
            Ok(Spanned::new(read.span(), value(read.into_inner())))
        }

        match self {
            Self::Age => next(map, |d: Dur<0>| Value::Duration(d.0)),
            Self::Window => next(map, |d: Dur<1000>| Value::Duration(d.0)),
            Self::Count => next(map, |c: Count<0, { u64::MAX }>| Value::Count(c.0)),
            Self::Fraction => next(map, |f: Fraction| Value::Number(f.0)),
            Self::Rate => next(map, |r: Rate| Value::Number(r.0)),
            Self::Ports => next(map, |p: Vec<Port>| Value::Ports(ports(p))),
            Self::Classes => next(map, |c: Vec<Class>| {
                Value::Classes(c.into_iter().map(|c| c.0).collect())
            }),
            Self::Causes => next(map, |c: Vec<Cause>| {
                Value::Causes(c.into_iter().map(|c| c.0).collect())
            }),
        }
    }
}

/// What a [`Value`] holds, as a kind takes it.
pub(super) trait FromValue: Sized {
    fn from_value(value: Value) -> Option<Self>;
}

macro_rules! from_value {
    ($($variant:ident($ty:ty)),* $(,)?) => {$(
        impl FromValue for $ty {
            fn from_value(value: Value) -> Option<Self> {
                match value {
                    Value::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    )*};
}

from_value!(
    Duration(Duration),
    Count(u64),
    Number(f64),
    Ports(Vec<u16>),
    Classes(Vec<ResetClass>),
    Causes(Vec<EndCause>),
);

/// A key of a rule besides the common ones, as written.
pub(super) struct Setting {
    key: String,
    /// Where its value is.
    span: Range<usize>,
    /// Its value, `None` when no kind takes the key.
    value: Option<Value>,
}

impl Setting {
    /// The value of `key`, next in `map`.
    pub fn read<'de, A: MapAccess<'de>>(key: String, map: &mut A) -> Result<Self, A::Error> {
        let (span, value) = match Field::named(&key) {
            Some(field) => {
                let value = field.ty.read(map)?;
                (value.span(), Some(value.into_inner()))
            }
            // Refused once the kind is known, which names the keys it takes.
            None => (map.next_value::<Spanned<IgnoredAny>>()?.span(), None),
        };
        Ok(Self { key, span, value })
    }
}

/// One rule's kind-specific settings, for its kind to take.
pub(super) struct Settings {
    kind: &'static Kind,
    /// The rule's table, where an error about the rule as a whole points.
    rule: Range<usize>,
    written: Vec<Setting>,
}

impl Settings {
    /// The settings of a rule of `kind`, unless one has a key the kind does not take: the first
    /// such key is the error.
    pub fn new(
        kind: &'static Kind,
        rule: Range<usize>,
        written: Vec<Setting>,
    ) -> Result<Self, Located> {
        let taken = |key: &str| kind.fields.iter().any(|field| field.key == key);
        if let Some(foreign) = written.iter().find(|s| !taken(&s.key)) {
            let expected: Vec<&str> = COMMON_RULE_FIELDS
                .iter()
                .copied()
                .chain(kind.fields.iter().map(|field| field.key))
                .collect();
            return Err(Located {
                span: foreign.span.clone(),
                message: format!(
                    "unknown field `{}` for kind = {:?}, expected one of {}",
                    foreign.key,
                    kind.name,
                    expected.join(", ")
                ),
                at_key: true,
            });
        }
        Ok(Self {
            kind,
            rule,
            written,
        })
    }

    pub fn kind_name(&self) -> &'static str {
        self.kind.name
    }

    /// The value of `field`, if the rule sets it.
    pub fn get<T: FromValue>(&mut self, field: Field) -> Option<T> {
        self.take(field).map(Spanned::into_inner)
    }

    /// The value of `field`, which the kind needs; `example` shows one in the error.
    pub fn required<T: FromValue>(&mut self, field: Field, example: &str) -> Result<T, Located> {
        self.get(field).ok_or_else(|| self.missing(field, example))
    }

    /// A rate the kind needs above 0 (the same key serves a kind where 0 means any event).
    pub fn rate_above_zero(&mut self, field: Field) -> Result<f64, Located> {
        let rate: Spanned<f64> = self.take(field).ok_or_else(|| self.missing(field, "10"))?;
        let value = *rate.get_ref();
        if value > 0.0 {
            Ok(value)
        } else {
            Err(Located::new(
                rate.span(),
                format!(
                    "invalid rate {value}: kind = {:?} needs a rate above 0, such as 10",
                    self.kind.name
                ),
            ))
        }
    }

    /// An error about the rule as a whole.
    pub fn invalid(&self, message: String) -> Located {
        Located::new(self.rule.clone(), message)
    }

    fn missing(&self, field: Field, example: &str) -> Located {
        self.invalid(format!(
            "missing field `{key}`, which kind = {:?} needs: add one, such as {key} = {example}",
            self.kind.name,
            key = field.key,
        ))
    }

    fn take<T: FromValue>(&mut self, field: Field) -> Option<Spanned<T>> {
        debug_assert!(
            self.kind.fields.contains(&field),
            "kind {} reads {}, which it does not list",
            self.kind.name,
            field.key
        );
        let setting = self.written.iter_mut().find(|s| s.key == field.key)?;
        let value = setting.value.take()?;
        let value = T::from_value(value)
            .unwrap_or_else(|| panic!("{} is read as {:?}", field.key, field.ty));
        Some(Spanned::new(setting.span.clone(), value))
    }
}
