pub mod reset;
pub mod span;
pub mod state;
pub mod timewait;
