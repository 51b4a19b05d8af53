//! What `ss` (iproute2) lists in a namespace: the kernel's own view, read by another program,
//! to check the tracker against.

use std::{net::SocketAddr, process::Command, str::FromStr as _};

use observer_common::TcpState;

use crate::netns::NetNs;

/// One TCP socket as `ss -tan` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Listed {
    pub state: TcpState,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// Every TCP socket of `ns`, by `ss -Htan`. Request sockets (`SYN-RECV`) are left out: they are
/// not sockets the tracker holds.
#[must_use]
pub fn tcp_sockets(ns: &NetNs) -> Vec<Listed> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), "ss", "-Htan"])
        .output()
        .expect("running ss");
    assert!(
        out.status.success(),
        "ss: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Listed> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [state, _, _, local, remote] = fields[..] else {
        panic!("unexpected ss line: {line}");
    };
    let state = match state {
        "ESTAB" => TcpState::Established,
        "SYN-SENT" => TcpState::SynSent,
        "SYN-RECV" => return None,
        "FIN-WAIT-1" => TcpState::FinWait1,
        "FIN-WAIT-2" => TcpState::FinWait2,
        "TIME-WAIT" => TcpState::TimeWait,
        "CLOSE" | "UNCONN" => TcpState::Close,
        "CLOSE-WAIT" => TcpState::CloseWait,
        "LAST-ACK" => TcpState::LastAck,
        "LISTEN" => TcpState::Listen,
        "CLOSING" => TcpState::Closing,
        other => panic!("unknown ss state {other}: {line}"),
    };
    Some(Listed {
        state,
        local: address(local),
        remote: address(remote),
    })
}

/// `127.0.0.1:80`, `[::1]:80`, `0.0.0.0:*`, `[::]:*`, `*:80`; bound to a device,
/// `127.0.0.1%lo:80` or `[::1]%lo:80`.
fn address(text: &str) -> SocketAddr {
    let (ip, port) = text.rsplit_once(':').expect("address:port");
    let port = if port == "*" {
        0
    } else {
        port.parse().unwrap()
    };
    let ip = ip.split('%').next().unwrap();
    let ip = match ip.trim_start_matches('[').trim_end_matches(']') {
        "*" => "0.0.0.0",
        other => other,
    };
    SocketAddr::new(std::net::IpAddr::from_str(ip).unwrap(), port)
}
