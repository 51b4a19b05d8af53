//! What a client of the daemon's socket asks for: one JSON object on one line.
//!
//! `{"stream":"events","filter":{"ports":[443],"states":["close_wait"]}}` subscribes to the
//! event lines that pass the filter; `{"snapshot":true}` asks for one read model of the
//! tracker ([`super::model`]). A connection may send several snapshot requests, one after
//! another; an event subscription is its last request.

use ipnet::IpNet;
use observer_common::TcpState;
use serde::{Deserialize, Serialize};

use super::filter::{Filter, parse_net, parse_state};
use crate::event::Family;

/// What the one event stream there is is called in a request.
pub const EVENTS: &str = "events";

/// Entries per list of a snapshot when the request does not say.
pub const DEFAULT_LISTED: usize = 200;

/// Most entries per list a snapshot request may ask for.
pub const MAX_LISTED: usize = 10_000;

/// A request line as written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestLine {
    /// `"events"`: stream the event lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Which events (with `stream`), or which entries a snapshot lists.
    #[serde(default, skip_serializing_if = "FilterFields::is_empty")]
    pub filter: FilterFields,
    /// One read model of the tracker.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snapshot: bool,
    /// With `snapshot`: list up to this many entries in each list (CLOSE_WAIT sockets,
    /// processes, destinations, half-open suspects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listed: Option<usize>,
}

/// The filter options of `observer watch`, as a request carries them: values of one field are
/// alternatives, different fields must all match; an empty field matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterFields {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Addresses or CIDR networks (`127.0.0.1`, `10.0.0.0/8`, `::1`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<String>,
    /// TCP state names, in any case, with `_` or `-` (`close_wait`, `CLOSE-WAIT`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<u32>,
    /// `ipv4` or `ipv6`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Network namespace inodes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub netns: Vec<u32>,
    /// Systemd units (`nginx.service`) of the sockets' cgroups.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<String>,
    /// Kubernetes pods, `NAME` or `NAMESPACE/NAME`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<String>,
    /// Cgroup paths, each matching itself and what is below it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cgroups: Vec<String>,
}

impl FilterFields {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl From<&Filter> for FilterFields {
    fn from(f: &Filter) -> Self {
        Self {
            ports: f.ports.clone(),
            addrs: f.nets.iter().map(IpNet::to_string).collect(),
            states: f.states.iter().map(|s| s.name().to_owned()).collect(),
            pids: f.pids.clone(),
            family: f.family.map(|f| f.name().to_owned()),
            netns: f.netns.clone(),
            units: f.units.clone(),
            pods: f.pods.clone(),
            cgroups: f.cgroups.clone(),
        }
    }
}

impl TryFrom<FilterFields> for Filter {
    type Error = RequestError;

    fn try_from(f: FilterFields) -> Result<Self, RequestError> {
        let family = match f.family.as_deref() {
            None => None,
            Some("ipv4") => Some(Family::Ipv4),
            Some("ipv6") => Some(Family::Ipv6),
            Some(other) => return Err(RequestError::Family(other.to_owned())),
        };
        Ok(Self {
            ports: f.ports,
            nets: f
                .addrs
                .iter()
                .map(|a| parse_net(a))
                .collect::<Result<_, _>>()
                .map_err(RequestError::Filter)?,
            states: f
                .states
                .iter()
                .map(|s| parse_state(s))
                .collect::<Result<Vec<TcpState>, _>>()
                .map_err(RequestError::Filter)?,
            pids: f.pids,
            family,
            netns: f.netns,
            units: f.units,
            pods: f.pods,
            cgroups: f.cgroups,
        })
    }
}

/// A request, checked.
#[derive(Clone, Debug)]
pub enum Request {
    /// The event lines that pass the filter, until the client goes.
    Events(Filter),
    /// One read model, up to `listed` entries per list, of those that pass `filter`.
    Snapshot { listed: usize, filter: Filter },
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(
        "not a request: {0} (send one JSON object on one line, e.g. {{\"stream\":\"events\"}} \
         or {{\"snapshot\":true}})"
    )]
    Json(#[from] serde_json::Error),
    #[error("unknown stream `{0}`: the one stream is \"events\"")]
    Stream(String),
    #[error("a request asks for either \"stream\" or \"snapshot\", not both")]
    Both,
    #[error("a request asks for \"stream\":\"events\" or \"snapshot\":true")]
    Neither,
    #[error("filter: {0}")]
    Filter(String),
    #[error("filter: family `{0}` is neither \"ipv4\" nor \"ipv6\"")]
    Family(String),
}

impl Request {
    /// Reads and checks one request line.
    pub fn parse(line: &str) -> Result<Self, RequestError> {
        let raw: RequestLine = serde_json::from_str(line.trim())?;
        match (raw.stream, raw.snapshot) {
            (Some(_), true) => Err(RequestError::Both),
            (None, false) => Err(RequestError::Neither),
            (Some(stream), false) if stream == EVENTS => Ok(Self::Events(raw.filter.try_into()?)),
            (Some(stream), false) => Err(RequestError::Stream(stream)),
            (None, true) => Ok(Self::Snapshot {
                listed: raw.listed.unwrap_or(DEFAULT_LISTED).min(MAX_LISTED),
                filter: raw.filter.try_into()?,
            }),
        }
    }

    /// The request as one line, newline included.
    #[must_use]
    pub fn to_line(&self) -> String {
        let raw = match self {
            Self::Events(filter) => RequestLine {
                stream: Some(EVENTS.to_owned()),
                filter: filter.into(),
                ..RequestLine::default()
            },
            Self::Snapshot { listed, filter } => RequestLine {
                snapshot: true,
                listed: Some(*listed),
                filter: filter.into(),
                ..RequestLine::default()
            },
        };
        let mut line = serde_json::to_string(&raw).expect("a request serializes");
        line.push('\n');
        line
    }
}

/// The line the daemon answers a request it refuses with, before it closes the connection.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorLine {
    #[serde(rename = "type")]
    pub kind: String,
    pub error: String,
}

impl ErrorLine {
    #[must_use]
    pub fn new(error: &impl std::fmt::Display) -> Self {
        Self {
            kind: "error".to_owned(),
            error: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_requests_carry_the_watch_filters() {
        let r = Request::parse(
            r#"{"stream":"events","filter":{"ports":[80,443],"addrs":["10.0.0.0/8","::1"],
               "states":["close-wait"],"pids":[7],"family":"ipv6","netns":[4026531840]}}"#,
        )
        .unwrap();
        let Request::Events(f) = r else {
            panic!("an event stream: {r:?}")
        };
        assert_eq!(f.ports, [80, 443]);
        assert_eq!(
            f.nets.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["10.0.0.0/8", "::1/128"]
        );
        assert_eq!(f.states, [TcpState::CloseWait]);
        assert_eq!(f.pids, [7]);
        assert_eq!(f.family, Some(Family::Ipv6));
        assert_eq!(f.netns, [4_026_531_840]);
    }

    #[test]
    fn requests_round_trip_through_their_line() {
        let filter = Filter {
            ports: vec![8080],
            states: vec![TcpState::TimeWait],
            family: Some(Family::Ipv4),
            ..Filter::default()
        };
        let line = Request::Events(filter).to_line();
        assert_eq!(
            line,
            "{\"stream\":\"events\",\"filter\":{\"ports\":[8080],\"states\":[\"TIME_WAIT\"],\
             \"family\":\"ipv4\"}}\n"
        );
        let Request::Events(back) = Request::parse(&line).unwrap() else {
            panic!("events")
        };
        assert_eq!(
            (back.ports, back.states, back.family),
            (vec![8080], vec![TcpState::TimeWait], Some(Family::Ipv4))
        );
        assert_eq!(
            Request::Snapshot {
                listed: 5,
                filter: Filter::default()
            }
            .to_line(),
            "{\"snapshot\":true,\"listed\":5}\n"
        );
        let line = Request::Snapshot {
            listed: 5,
            filter: Filter {
                ports: vec![443],
                ..Filter::default()
            },
        }
        .to_line();
        assert_eq!(
            line,
            "{\"filter\":{\"ports\":[443]},\"snapshot\":true,\"listed\":5}\n"
        );
        let Request::Snapshot { filter, .. } = Request::parse(&line).unwrap() else {
            panic!("a snapshot")
        };
        assert_eq!(filter.ports, [443]);
        assert_eq!(
            Request::parse(r#"{"stream":"events"}"#).unwrap().to_line(),
            { "{\"stream\":\"events\"}\n" }
        );
    }

    #[test]
    fn snapshot_requests_bound_their_lists() {
        let listed = |line: &str| match Request::parse(line).unwrap() {
            Request::Snapshot { listed, .. } => listed,
            Request::Events(_) => panic!("a snapshot"),
        };
        assert_eq!(listed(r#"{"snapshot":true}"#), DEFAULT_LISTED);
        assert_eq!(listed(r#"{"snapshot":true,"listed":3}"#), 3);
        assert_eq!(listed(r#"{"snapshot":true,"listed":99999999}"#), MAX_LISTED);
    }

    #[test]
    fn bad_requests_say_what_to_send() {
        let error = |line: &str| Request::parse(line).unwrap_err().to_string();
        assert!(
            error("hello").contains("send one JSON object"),
            "{}",
            error("hello")
        );
        assert!(error(r#"{"stream":"events","snapshot":true}"#).contains("not both"));
        assert!(error("{}").contains("\"stream\":\"events\" or"));
        assert!(error(r#"{"stream":"alerts"}"#).contains("unknown stream `alerts`"));
        assert!(
            error(r#"{"stream":"events","filter":{"states":["open"]}}"#)
                .contains("`open` is not a TCP state")
        );
        assert!(
            error(r#"{"stream":"events","filter":{"addrs":["example.com"]}}"#)
                .contains("not an IP address")
        );
        assert!(error(r#"{"stream":"events","filter":{"family":"ipx"}}"#).contains("ipx"));
        assert!(
            error(r#"{"stream":"events","filter":{"port":[80]}}"#).contains("unknown field"),
            "misspelt fields are refused"
        );
    }
}
