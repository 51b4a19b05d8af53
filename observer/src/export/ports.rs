//! Listening ports as metric labels, bounded: a configured list, or the first ports seen up to
//! a limit; every other port is summed under `other`.

use rustc_hash::FxHashSet;

/// A port's label: its number, or the overflow bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortLabel {
    Port(u16),
    Other,
}

impl PortLabel {
    #[must_use]
    pub fn value(self) -> String {
        match self {
            Self::Port(p) => p.to_string(),
            Self::Other => "other".to_owned(),
        }
    }
}

/// Which ports have a label of their own. A port keeps its label once given one, so that its
/// series never moves to `other` and back.
#[derive(Clone, Debug)]
pub struct PortLabels {
    configured: FxHashSet<u16>,
    max: usize,
    assigned: FxHashSet<u16>,
}

impl PortLabels {
    /// `configured` empty: the first `max` ports seen get labels.
    #[must_use]
    pub fn new(configured: &[u16], max: usize) -> Self {
        Self {
            configured: configured.iter().copied().collect(),
            max,
            assigned: FxHashSet::default(),
        }
    }

    pub fn label(&mut self, port: u16) -> PortLabel {
        if !self.configured.is_empty() {
            return if self.configured.contains(&port) {
                PortLabel::Port(port)
            } else {
                PortLabel::Other
            };
        }
        if self.assigned.contains(&port) || self.assigned.len() < self.max {
            self.assigned.insert(port);
            PortLabel::Port(port)
        } else {
            PortLabel::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_ports_only() {
        let mut labels = PortLabels::new(&[80, 443], 1);
        assert_eq!(labels.label(443), PortLabel::Port(443));
        assert_eq!(labels.label(8080), PortLabel::Other);
    }

    #[test]
    fn first_seen_ports_keep_their_labels() {
        let mut labels = PortLabels::new(&[], 2);
        assert_eq!(labels.label(1), PortLabel::Port(1));
        assert_eq!(labels.label(2), PortLabel::Port(2));
        assert_eq!(labels.label(3), PortLabel::Other);
        assert_eq!(labels.label(1), PortLabel::Port(1));
        assert_eq!(PortLabel::Other.value(), "other");
    }
}
