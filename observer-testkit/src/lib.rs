//! What observer's tests, its benchmark and its stress runs share: network namespaces a run
//! makes for itself, `observer run` as a child process, a connection-churn generator whose
//! counts are known, the daemon's metrics as scraped, `ss`'s view of a namespace, the rules
//! every histogram of the exposition follows, the PromQL of the shipped rules and dashboard,
//! tmux for full-screen views, and skipping a test loudly.
//!
//! Nothing here depends on the observer crate: what it checks, it reads from the outside.

pub mod churn;
pub mod daemon;
pub mod exposition;
pub mod netns;
pub mod promql;
pub mod scrape;
pub mod skip;
pub mod ss;
pub mod tmux;
