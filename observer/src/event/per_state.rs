//! One value per TCP state.

use std::ops::{Index, IndexMut};

use observer_common::TcpState;

/// One `T` for each of the kernel's TCP states, indexed by the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerState<T>([T; TcpState::ALL.len()]);

impl<T: Default> Default for PerState<T> {
    fn default() -> Self {
        Self::from_fn(|_| T::default())
    }
}

/// The array index of a state: the kernel numbers them from 1.
const fn slot(state: TcpState) -> usize {
    state as usize - 1
}

impl<T> Index<TcpState> for PerState<T> {
    type Output = T;

    fn index(&self, state: TcpState) -> &T {
        &self.0[slot(state)]
    }
}

impl<T> IndexMut<TcpState> for PerState<T> {
    fn index_mut(&mut self, state: TcpState) -> &mut T {
        &mut self.0[slot(state)]
    }
}

impl<T> PerState<T> {
    /// `f(state)` for every state.
    pub fn from_fn(mut f: impl FnMut(TcpState) -> T) -> Self {
        Self(std::array::from_fn(|i| f(TcpState::ALL[i])))
    }

    /// Every state with its value, in the kernel's order.
    pub fn iter(&self) -> impl Iterator<Item = (TcpState, &T)> {
        TcpState::ALL.into_iter().zip(self.0.iter())
    }

    /// The values, in the kernel's order of states.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexed_by_state() {
        let mut counts = PerState::<u64>::default();
        counts[TcpState::CloseWait] += 2;
        counts[TcpState::NewSynRecv] = 1;
        counts[TcpState::Established] = 3;
        assert_eq!(counts[TcpState::CloseWait], 2);
        let listed: Vec<_> = counts.iter().filter(|(_, n)| **n > 0).collect();
        assert_eq!(
            listed,
            [
                (TcpState::Established, &3),
                (TcpState::CloseWait, &2),
                (TcpState::NewSynRecv, &1)
            ]
        );
        assert_eq!(counts.values().sum::<u64>(), 6);
    }
}
