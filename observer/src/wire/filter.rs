//! Which events `observer watch`, `observer top` and the daemon's socket clients see.
//!
//! Values given to one option are alternatives (`--port 80 --port 443`: either); different
//! options must all match.

use ipnet::IpNet;
use observer_common::TcpState;

use crate::{
    event::{Family, Netns, Reset, SocketError, Transition, Tuple},
    snapshot::Selection,
    track::{Destination, OwnerSockets, Report},
    workload::Attribution,
};

#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Local or remote port.
    pub ports: Vec<u16>,
    /// Local or remote address, within any of these networks.
    pub nets: Vec<IpNet>,
    /// Old or new state.
    pub states: Vec<TcpState>,
    /// Owning process.
    pub pids: Vec<u32>,
    pub family: Option<Family>,
    /// Network namespace inode.
    pub netns: Vec<u32>,
    /// Systemd unit of the socket's cgroup.
    pub units: Vec<String>,
    /// Kubernetes pod, `NAME` or `NAMESPACE/NAME`.
    pub pods: Vec<String>,
    /// Cgroup path, or a prefix of it at a `/`.
    pub cgroups: Vec<String>,
}

impl Filter {
    /// Whether the filter asks about workloads (which only transitions carry).
    #[must_use]
    pub fn by_workload(&self) -> bool {
        !(self.units.is_empty() && self.pods.is_empty() && self.cgroups.is_empty())
    }

    /// Whether a socket of workload `w` passes the workload options (`--unit`, `--pod`,
    /// `--cgroup`); a socket whose workload is unknown passes only when none is given.
    #[must_use]
    pub fn matches_workload(&self, w: Option<&Attribution>) -> bool {
        if !self.by_workload() {
            return true;
        }
        let Some(w) = w else {
            return false;
        };
        let any = |empty: bool, hit: bool| empty || hit;
        any(
            self.units.is_empty(),
            w.workload
                .unit
                .as_ref()
                .is_some_and(|u| self.units.contains(u)),
        ) && any(
            self.pods.is_empty(),
            w.pod.as_ref().is_some_and(|p| {
                let full = format!("{}/{}", p.namespace, p.pod);
                self.pods.iter().any(|want| *want == p.pod || *want == full)
            }),
        ) && any(
            self.cgroups.is_empty(),
            self.cgroups.iter().any(|c| under(&w.cgroup, c)),
        )
    }

    /// Whether a report passes.
    #[must_use]
    pub fn passes(&self, report: &Report) -> bool {
        match report {
            Report::Transition {
                transition, seen, ..
            } => self.matches(transition, seen.owner.map(|o| o.pid)),
            Report::Reset {
                reset,
                state,
                owner,
                ..
            } => self.matches_reset(reset, *state, owner.map(|o| o.pid)),
            Report::Retransmits {
                tuple,
                state,
                owner,
                ..
            } => self.matches_retransmits(tuple, *state, owner.map(|o| o.pid)),
            Report::ConnectionError { error, owner, .. } => {
                self.matches_error(error, owner.map(|o| o.pid))
            }
        }
    }

    /// Whether `t`, owned by `owner_pid` when known, passes.
    #[must_use]
    pub fn matches(&self, t: &Transition, owner_pid: Option<u32>) -> bool {
        self.matches_parts(
            (t.local, t.remote),
            Some(&[t.old, t.new]),
            owner_pid,
            t.family,
            t.netns,
        )
    }

    /// Whether an RST on a socket in `state` passes (`--state` matches the socket's state).
    #[must_use]
    pub fn matches_reset(
        &self,
        r: &Reset,
        state: Option<TcpState>,
        owner_pid: Option<u32>,
    ) -> bool {
        let states: &[TcpState] = match &state {
            Some(s) => std::slice::from_ref(s),
            None => &[],
        };
        self.matches_parts(
            (r.local, r.remote),
            Some(states),
            owner_pid,
            r.family,
            r.netns,
        )
    }

    /// Whether a change in a connection's retransmissions passes (`--state` matches the
    /// connection's state).
    #[must_use]
    pub fn matches_retransmits(
        &self,
        tuple: &Tuple,
        state: Option<TcpState>,
        owner_pid: Option<u32>,
    ) -> bool {
        self.matches_parts(
            (tuple.local, tuple.remote),
            Some(state.as_slice()),
            owner_pid,
            tuple.family(),
            tuple.netns,
        )
    }

    /// Whether a connection error passes (`--state` matches the state it ended in).
    #[must_use]
    pub fn matches_error(&self, e: &SocketError, owner_pid: Option<u32>) -> bool {
        self.matches_parts(
            (e.local, e.remote),
            Some(e.state.as_slice()),
            owner_pid,
            e.family,
            e.netns,
        )
    }

    /// `states`: those the event is about; `None` when the state is not in question.
    fn matches_parts(
        &self,
        (local, remote): (std::net::SocketAddr, std::net::SocketAddr),
        states: Option<&[TcpState]>,
        owner_pid: Option<u32>,
        family: Family,
        netns: Option<Netns>,
    ) -> bool {
        let any = |empty: bool, hit: bool| empty || hit;
        any(
            self.ports.is_empty(),
            self.ports
                .iter()
                .any(|p| *p == local.port() || *p == remote.port()),
        ) && any(
            self.nets.is_empty(),
            self.nets
                .iter()
                .any(|n| n.contains(&local.ip()) || n.contains(&remote.ip())),
        ) && any(
            self.states.is_empty() || states.is_none(),
            self.states
                .iter()
                .any(|s| states.is_some_and(|states| states.contains(s))),
        ) && any(
            self.pids.is_empty(),
            owner_pid.is_some_and(|p| self.pids.contains(&p)),
        ) && self.family.is_none_or(|f| f == family)
            && any(
                self.netns.is_empty(),
                netns.is_some_and(|n| self.netns.contains(&n.inode())),
            )
    }
}

/// The lists of a snapshot for `observer top`, filtered as its panes are: connections by
/// address, port, process and namespace (each pane holds one kind of state), processes by pid
/// and the states they hold sockets in, timewait destinations by address, remote port and
/// namespace. Workload options do not apply to lists.
impl Selection for Filter {
    fn connection(&self, tuple: &Tuple, owner_pid: Option<u32>) -> bool {
        self.matches_parts(
            (tuple.local, tuple.remote),
            None,
            owner_pid,
            tuple.family(),
            tuple.netns,
        )
    }

    fn owner(&self, o: &OwnerSockets) -> bool {
        (self.pids.is_empty() || o.owner.is_some_and(|t| self.pids.contains(&t.pid)))
            && (self.states.is_empty() || self.states.iter().any(|s| o.sockets[*s] > 0))
    }

    fn destination(&self, d: &Destination) -> bool {
        let remote = d.remote.ip();
        (self.ports.is_empty() || self.ports.contains(&d.remote.port()))
            && (self.nets.is_empty()
                || self
                    .nets
                    .iter()
                    .any(|n| n.contains(&d.local) || n.contains(&remote)))
            && self.family.is_none_or(|f| {
                f == if remote.is_ipv4() {
                    Family::Ipv4
                } else {
                    Family::Ipv6
                }
            })
            && (self.netns.is_empty() || d.netns.is_some_and(|n| self.netns.contains(&n.inode())))
    }
}

/// Whether cgroup `path` is `prefix` or below it (`/system.slice` holds
/// `/system.slice/nginx.service`, not `/system.slices`).
fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// An address or network as the filters take it (`127.0.0.1`, `::1`, `10.0.0.0/8`).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!("`{s}` is not an IP address or CIDR network (e.g. 127.0.0.1, ::1, 10.0.0.0/8)")
        })
}

/// A TCP state as the filters take it: any case, with `_` or `-` (`close-wait`).
pub fn parse_state(s: &str) -> Result<TcpState, String> {
    TcpState::from_name(s).ok_or_else(|| {
        let names: Vec<_> = TcpState::ALL
            .iter()
            .map(|s| s.name().to_ascii_lowercase())
            .collect();
        format!("`{s}` is not a TCP state; use one of: {}", names.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use observer_common::TcpState::{CloseWait, Established, LastAck, SynSent};

    use super::*;
    use crate::event::Task;

    fn t(local: &str, remote: &str, old: TcpState, new: TcpState) -> Transition {
        let local: std::net::SocketAddr = local.parse().unwrap();
        Transition {
            cgroup: None,
            mono_ns: 0,
            sock: 1,
            old,
            new,
            family: if local.is_ipv4() {
                Family::Ipv4
            } else {
                Family::Ipv6
            },
            local,
            remote: remote.parse().unwrap(),
            netns: Netns::new(77),
            task: Task::new(5, 5, [0; 16]),
            owner_context: false,
            has_socket: None,
        }
    }

    #[test]
    fn each_option_excludes_what_it_should() {
        let v4 = t("127.0.0.1:40000", "127.0.0.2:8080", SynSent, Established);
        let v6 = t("[::1]:40001", "[::1]:9090", CloseWait, LastAck);
        let all = Filter::default();
        assert!(all.matches(&v4, None) && all.matches(&v6, None));

        let port = Filter {
            ports: vec![8080],
            ..Filter::default()
        };
        assert!(port.matches(&v4, None) && !port.matches(&v6, None));
        let local_port = Filter {
            ports: vec![40001],
            ..Filter::default()
        };
        assert!(!local_port.matches(&v4, None) && local_port.matches(&v6, None));

        let addr = Filter {
            nets: vec!["127.0.0.2/32".parse().unwrap()],
            ..Filter::default()
        };
        assert!(addr.matches(&v4, None) && !addr.matches(&v6, None));
        let net = Filter {
            nets: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            ..Filter::default()
        };
        assert!(net.matches(&v4, None) && net.matches(&v6, None));

        let state = Filter {
            states: vec![CloseWait],
            ..Filter::default()
        };
        assert!(!state.matches(&v4, None) && state.matches(&v6, None));

        let pid = Filter {
            pids: vec![42],
            ..Filter::default()
        };
        assert!(pid.matches(&v4, Some(42)) && !pid.matches(&v4, Some(5)));
        assert!(
            !pid.matches(&v4, None),
            "an unknown owner does not match a pid"
        );

        let four = Filter {
            family: Some(Family::Ipv4),
            ..Filter::default()
        };
        assert!(four.matches(&v4, None) && !four.matches(&v6, None));
        let six = Filter {
            family: Some(Family::Ipv6),
            ..Filter::default()
        };
        assert!(!six.matches(&v4, None) && six.matches(&v6, None));

        let ns = Filter {
            netns: vec![78],
            ..Filter::default()
        };
        assert!(!ns.matches(&v4, None));
        let ns = Filter {
            netns: vec![77],
            ..Filter::default()
        };
        assert!(ns.matches(&v4, None));

        let both = Filter {
            ports: vec![8080],
            states: vec![CloseWait],
            ..Filter::default()
        };
        assert!(
            !both.matches(&v4, None) && !both.matches(&v6, None),
            "options combine with AND"
        );
    }

    #[test]
    fn retransmissions_and_errors_are_filtered_like_transitions() {
        let tuple = Tuple {
            netns: Netns::new(77),
            local: "10.0.0.1:40000".parse().unwrap(),
            remote: "10.0.0.2:80".parse().unwrap(),
        };
        let error = SocketError {
            mono_ns: 0,
            sock: 1,
            error: 110,
            state: Some(Established),
            family: Family::Ipv4,
            local: tuple.local,
            remote: tuple.remote,
            netns: Netns::new(77),
            unrecovered: None,
            probes_out: None,
            unsent_data: None,
        };
        let pass = |f: &Filter| {
            (
                f.matches_retransmits(&tuple, Some(Established), Some(42)),
                f.matches_error(&error, Some(42)),
            )
        };
        assert_eq!(pass(&Filter::default()), (true, true));
        let with = |set: fn(&mut Filter)| {
            let mut f = Filter::default();
            set(&mut f);
            f
        };
        for (f, expected) in [
            (with(|f| f.ports = vec![80]), true),
            (with(|f| f.ports = vec![443]), false),
            (
                with(|f| f.nets = vec!["10.0.0.2/32".parse().unwrap()]),
                true,
            ),
            (with(|f| f.states = vec![Established]), true),
            (with(|f| f.states = vec![CloseWait]), false),
            (with(|f| f.pids = vec![42]), true),
            (with(|f| f.pids = vec![7]), false),
            (with(|f| f.family = Some(Family::Ipv6)), false),
            (with(|f| f.netns = vec![77]), true),
            (with(|f| f.netns = vec![78]), false),
        ] {
            assert_eq!(pass(&f), (expected, expected), "{f:?}");
        }
        let unknown = Tuple {
            netns: None,
            ..tuple
        };
        assert!(
            !with(|f| f.netns = vec![77]).matches_retransmits(&unknown, None, None),
            "an unknown namespace does not match --netns"
        );
        assert!(
            !with(|f| f.states = vec![Established]).matches_retransmits(&tuple, None, None),
            "an unknown state does not match --state"
        );
    }

    #[test]
    fn workload_options_match_units_pods_and_cgroup_subtrees() {
        use crate::workload::{Attribution, PodFields, Workload};
        let nginx = Attribution {
            cgroup: "/system.slice/nginx.service".to_owned(),
            workload: Workload::from_path("/system.slice/nginx.service"),
            pod: None,
        };
        let pod = Attribution {
            cgroup: "/kubepods/podx/abc".to_owned(),
            workload: Workload::default(),
            pod: Some(PodFields {
                pod: "checkout-7f9c".to_owned(),
                namespace: "shop".to_owned(),
                container: "api".to_owned(),
            }),
        };
        assert!(
            Filter::default().matches_workload(None),
            "no option: all pass"
        );
        let units = Filter {
            units: vec!["nginx.service".to_owned()],
            ..Filter::default()
        };
        assert!(units.matches_workload(Some(&nginx)));
        assert!(!units.matches_workload(Some(&pod)));
        assert!(!units.matches_workload(None), "unknown does not pass");
        for want in ["checkout-7f9c", "shop/checkout-7f9c"] {
            let pods = Filter {
                pods: vec![want.to_owned()],
                ..Filter::default()
            };
            assert!(pods.matches_workload(Some(&pod)), "{want}");
            assert!(!pods.matches_workload(Some(&nginx)), "{want}");
        }
        let subtree = |c: &str| Filter {
            cgroups: vec![c.to_owned()],
            ..Filter::default()
        };
        assert!(subtree("/system.slice").matches_workload(Some(&nginx)));
        assert!(subtree("/system.slice/").matches_workload(Some(&nginx)));
        assert!(subtree("/").matches_workload(Some(&nginx)));
        assert!(!subtree("/system.slic").matches_workload(Some(&nginx)));
        assert!(!subtree("/kubepods").matches_workload(Some(&nginx)));
    }

    #[test]
    fn snapshot_lists_are_selected_as_top_filters_its_panes() {
        let destination = Destination {
            netns: Netns::new(9),
            local: "127.0.0.1".parse().unwrap(),
            remote: "127.0.0.2:8080".parse().unwrap(),
        };
        let owner = OwnerSockets {
            owner: Some(Task::named(42, "server")),
            sockets: crate::event::PerState::from_fn(|s| u64::from(s == CloseWait)),
            total: 1,
            oldest_close_wait_ns: Some(1),
        };
        let with = |f: Filter| (f.destination(&destination), f.owner(&owner));
        assert_eq!(with(Filter::default()), (true, true));
        let port = |p| Filter {
            ports: vec![p],
            ..Filter::default()
        };
        assert!(with(port(8080)).0);
        assert!(!with(port(1)).0);
        let family = Filter {
            family: Some(Family::Ipv6),
            ..Filter::default()
        };
        assert!(!with(family).0);
        let netns = Filter {
            netns: vec![10],
            ..Filter::default()
        };
        assert!(!with(netns).0);
        let states = |s| Filter {
            states: vec![s],
            ..Filter::default()
        };
        assert!(with(states(CloseWait)).1);
        assert!(!with(states(Established)).1);
        let pid = |p| Filter {
            pids: vec![p],
            ..Filter::default()
        };
        assert_eq!((with(pid(42)).1, with(pid(43)).1), (true, false));
        let tuple = Tuple {
            netns: Netns::new(9),
            local: "127.0.0.1:8080".parse().unwrap(),
            remote: "127.0.0.2:50000".parse().unwrap(),
        };
        // A pane holds one kind of state: `--state` does not take its connections away.
        assert!(states(Established).connection(&tuple, Some(42)));
        assert!(!port(443).connection(&tuple, Some(42)));
        assert!(!pid(43).connection(&tuple, Some(42)));
    }
}
