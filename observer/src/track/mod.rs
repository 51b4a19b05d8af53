//! Per-socket state kept between transitions.

pub mod state_clock;

pub use state_clock::{Observation, Owner, StateClock};
