//! What observer's privileged tests, its benchmark and its stress runs share: network
//! namespaces a run makes for itself, `observer run` as a child process, a connection-churn
//! generator whose counts are known, the daemon's metrics as scraped, `ss`'s view of a
//! namespace, and the rules every histogram of the exposition follows.
//!
//! Nothing here depends on the observer crate: what it checks, it reads from the outside.

pub mod churn;
pub mod daemon;
pub mod exposition;
pub mod netns;
pub mod scrape;
pub mod ss;
