pub mod baseline;
pub mod common;
pub mod reset;
pub mod retransmit;
pub mod sock_error;
pub mod span;
pub mod state;
pub mod timewait;
