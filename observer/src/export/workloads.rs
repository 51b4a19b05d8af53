//! Workloads as metric labels, bounded: the first workloads seen keep a label of their own up
//! to a limit, every later one is summed under `other`, and sockets whose workload is not known
//! under `unknown`.

use rustc_hash::FxHashSet;

/// A workload's label value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadLabel {
    Named(String),
    /// Beyond the labelled ones.
    Other,
    /// No cgroup, or one no convention names.
    Unknown,
}

impl WorkloadLabel {
    #[must_use]
    pub fn value(&self) -> &str {
        match self {
            Self::Named(n) => n,
            Self::Other => "other",
            Self::Unknown => "unknown",
        }
    }
}

/// Which workloads have a label of their own. One keeps it once given, so that its series
/// never moves to `other` and back.
#[derive(Clone, Debug)]
pub struct WorkloadLabels {
    max: usize,
    assigned: FxHashSet<String>,
}

impl WorkloadLabels {
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            max,
            assigned: FxHashSet::default(),
        }
    }

    pub fn label(&mut self, name: Option<String>) -> WorkloadLabel {
        let Some(name) = name else {
            return WorkloadLabel::Unknown;
        };
        if self.assigned.contains(&name) || self.assigned.len() < self.max {
            self.assigned.insert(name.clone());
            WorkloadLabel::Named(name)
        } else {
            WorkloadLabel::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_workloads_seen_keep_their_labels_and_the_rest_are_other() {
        let mut labels = WorkloadLabels::new(2);
        let named = |s: &str| Some(s.to_owned());
        assert_eq!(labels.label(named("a.service")).value(), "a.service");
        assert_eq!(labels.label(named("shop/web")).value(), "shop/web");
        assert_eq!(labels.label(named("c.service")), WorkloadLabel::Other);
        assert_eq!(labels.label(named("a.service")).value(), "a.service");
        assert_eq!(labels.label(None), WorkloadLabel::Unknown);
        assert_eq!(WorkloadLabel::Unknown.value(), "unknown");
    }
}
