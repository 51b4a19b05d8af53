//! What `observer watch --json` prints and what the daemon's socket carries, both ways: the
//! event lines ([`lines`]), the filters clients ask for ([`filter`]), the requests
//! ([`request`]), the read model of the tracker that `observer top` shows ([`model`]), and
//! the client's end of the socket ([`client`]). One JSON object per line.

pub mod client;
pub mod filter;
pub mod lines;
pub mod model;
pub mod request;

pub use filter::Filter;
