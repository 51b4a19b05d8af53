//! The Prometheus text format, parsed, and the rules every histogram in it must follow: what
//! `promtool check metrics` does not check.

use std::collections::BTreeMap;

/// One sample: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of a text exposition (comments skipped).
#[must_use]
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("series value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, labels_of(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("value in {line}")),
            };
            Sample {
                name: name.to_owned(),
                labels,
                value,
            }
        })
        .collect()
}

/// `a="1",b="x"` (values without escaped quotes or commas, as observer writes them).
fn labels_of(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("label=value");
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect()
}

/// One histogram series: its buckets (upper bound, cumulative count), sum and count.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

/// A count as the exposition writes it.
#[must_use]
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "counts are non-negative integers"
)]
pub fn count(value: f64) -> u64 {
    assert!(value >= 0.0 && value.fract() == 0.0, "not a count: {value}");
    value as u64
}

impl Histogram {
    /// Observations in `(low, high]`.
    #[must_use]
    pub fn between(&self, low: f64, high: f64) -> u64 {
        self.at(high) - self.at(low)
    }

    /// The cumulative count of the bucket whose upper bound is `le`.
    #[must_use]
    pub fn at(&self, le: f64) -> u64 {
        self.buckets
            .iter()
            .find(|(b, _)| (*b - le).abs() < 1e-12 || (b.is_infinite() && le.is_infinite()))
            .unwrap_or_else(|| panic!("no bucket le={le} in {self:?}"))
            .1
    }

    /// `histogram_quantile(q)` as Prometheus computes it: the bucket holding rank `q * count`,
    /// interpolated linearly from its lower bound (0 for the first).
    #[must_use]
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    pub fn quantile(&self, q: f64) -> f64 {
        let rank = q * self.count as f64;
        let mut lower = (0.0, 0.0);
        for &(le, cumulative) in &self.buckets {
            let cumulative = cumulative as f64;
            if cumulative >= rank {
                if le.is_infinite() {
                    return lower.0;
                }
                return lower.0 + (le - lower.0) * (rank - lower.1) / (cumulative - lower.1);
            }
            lower = (le, cumulative);
        }
        unreachable!("+Inf holds every observation")
    }
}

/// Every histogram of `family` (`NAME` of `NAME_bucket`, `NAME_sum`, `NAME_count`), by its
/// labels other than `le`. Panics, naming the series, unless each is valid: cumulative buckets
/// in increasing order ending with `+Inf`, `+Inf` equal to `_count`, a `_sum` of 0 when empty.
#[must_use]
pub fn histograms(
    samples: &[Sample],
    family: &str,
) -> BTreeMap<BTreeMap<String, String>, Histogram> {
    let mut out: BTreeMap<BTreeMap<String, String>, Histogram> = BTreeMap::new();
    let empty = || Histogram {
        buckets: Vec::new(),
        sum: f64::NAN,
        count: u64::MAX,
    };
    for s in samples {
        let Some(suffix) = s.name.strip_prefix(family) else {
            continue;
        };
        let mut labels = s.labels.clone();
        match suffix {
            "_bucket" => {
                let le = labels.remove("le").expect("a bucket has le");
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                out.entry(labels)
                    .or_insert_with(empty)
                    .buckets
                    .push((bound, count(s.value)));
            }
            "_sum" => out.entry(labels).or_insert_with(empty).sum = s.value,
            "_count" => out.entry(labels).or_insert_with(empty).count = count(s.value),
            _ => {}
        }
    }
    assert!(!out.is_empty(), "no histogram named {family}");
    for (labels, h) in &out {
        let what = format!("{family}{labels:?}");
        assert!(h.buckets.len() >= 2, "{what}: buckets {:?}", h.buckets);
        assert!(
            h.buckets.windows(2).all(|w| w[0].0 < w[1].0),
            "{what}: bounds not increasing: {:?}",
            h.buckets
        );
        assert!(
            h.buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{what}: buckets not cumulative: {:?}",
            h.buckets
        );
        let (last, inf) = *h.buckets.last().unwrap();
        assert!(last.is_infinite(), "{what}: no +Inf bucket");
        assert_eq!(inf, h.count, "{what}: +Inf is {inf}, _count is {}", h.count);
        assert!(
            h.sum >= 0.0 && (h.count > 0 || h.sum == 0.0),
            "{what}: _sum {} with _count {}",
            h.sum,
            h.count
        );
    }
    out
}
