//! The command line: what each command and option means, with examples. One job (the clap
//! definitions and their conversion to each command's options), kept in one file.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{
    Args, Parser, Subcommand,
    builder::{OsStringValueParser, TypedValueParser as _},
};
use ipnet::IpNet;
use observer::{
    config::{AlertmanagerConfig, Config},
    event::Family,
    load::{LoadOptions, RingBufferSize},
    top::TopOptions,
    track::DEFAULT_MAX_SOCKETS,
    watch::{Filter, WatchAlerts, WatchOptions},
    wire::client::Source,
};
use observer_common::TcpState;

#[derive(Debug, Parser)]
#[command(
    name = "observer",
    version,
    about = "Observe TCP connection states with eBPF and report the ones that go wrong",
    long_about = "Observe TCP connection states with eBPF and report the ones that go wrong.\n\n\
        observer attaches to the kernel's sock:inet_sock_set_state tracepoint and sees every TCP \
        state change on the host, in every network namespace, as it happens. TIME_WAIT, which \
        no transition reports, is followed through the timewait socket's timer, and every RST \
        is named with the kernel's reason. Sockets that existed before it started are learnt \
        from sock_diag. It needs root (or CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYSLOG, CAP_SYS_PTRACE and \
        CAP_DAC_READ_SEARCH) and Linux 5.8 or newer; `observer doctor` checks a host.",
    after_help = "Examples:\n  \
        sudo observer watch                       every transition, live\n  \
        sudo observer watch --port 443            connections to or from port 443\n  \
        sudo observer watch --state close-wait    sockets entering or leaving CLOSE_WAIT\n  \
        sudo observer watch --json | jq .         one JSON object per line\n  \
        sudo observer watch --summary 10          plus CLOSE_WAIT list, counts and RSTs every 10 s\n  \
        sudo observer watch --alerts              plus alerts of the built-in rules as they fire\n  \
        observer top                              full-screen view, from the daemon's socket\n  \
        sudo observer run                         the daemon: metrics on 127.0.0.1:9977, alerts\n  \
        sudo observer run --config my.toml        with rules and sinks from a file"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log level for messages on stderr: error, warn, info, debug or trace. `RUST_LOG`, when
    /// set, takes precedence.
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL")]
    pub log_level: log::LevelFilter,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream TCP state transitions live, one line each.
    ///
    /// Each line shows the wall-clock time, the owning process (pid/comm, `?` when not yet
    /// known: transitions driven by incoming packets run in softirq context, where the current
    /// process is unrelated), local -> remote address, OLD -> NEW state, and in parentheses the
    /// time the socket spent in OLD when its entry into OLD was seen (`>=` when the socket
    /// existed before observer started, so only a lower bound is known).
    ///
    /// TIME_WAIT appears as FIN_WAIT2 -> TIME_WAIT and TIME_WAIT -> CLOSE, with the time spent
    /// and whether the timer expired or the socket was killed early. RSTs appear as their own
    /// lines: direction, the socket's state, what they mean, and the kernel's reason.
    ///
    /// Retransmissions appear once per streak, not per segment: RETRANSMIT when a connection
    /// starts retransmitting without progress, HALF-OPEN? when it has made none for
    /// --half-open-after, RECOVERED when it makes progress again. A connection the kernel ends
    /// with an error appears as TIMEOUT (with what timed out: retransmissions, keepalive or
    /// zero-window probes, the handshake), REFUSED, RESET or UNREACHABLE, with the errno.
    ///
    /// Filters: values of one option are alternatives, different options must all match.
    #[command(after_help = "Examples:\n  \
        sudo observer watch --port 8080 -4\n  \
        sudo observer watch --addr 10.0.0.0/8 --state established --state close\n  \
        sudo observer watch --pid 1234 --json\n  \
        sudo observer watch --port 443 --half-open-after 5s --summary 30\n  \
        sudo observer watch --netns $(stat -Lc %i /run/netns/blue)\n  \
        sudo observer watch --unit nginx.service --state close_wait\n  \
        sudo observer watch --pod shop/checkout-7f9c --json")]
    Watch(WatchArgs),

    /// Run the daemon: track every TCP socket, serve Prometheus metrics, evaluate alert rules.
    ///
    /// Metrics are served on http://127.0.0.1:9977/metrics by default, and the alerts now
    /// pending or firing on /alerts. Alert rules (built in, and from the config file) are
    /// evaluated every few seconds; each state change (pending, firing, resolved) is logged,
    /// and can be appended to a JSON-lines file and pushed to Alertmanager.
    ///
    /// Without --config, /etc/observer/observer.toml is read if it exists; otherwise every
    /// setting has its default (deploy/observer.toml documents each). Logs go to stderr, with
    /// syslog priorities when started by systemd; --log-level or RUST_LOG set the level.
    #[command(after_help = "Examples:\n  \
        sudo observer run\n  \
        sudo observer run --config /etc/observer/observer.toml\n  \
        sudo observer run --listen 0.0.0.0:9977 --log-level debug\n  \
        curl -s localhost:9977/metrics | grep observer_tcp_sockets")]
    Run(RunArgs),

    /// A full-screen view of every TCP socket, refreshed every second: listeners, processes,
    /// CLOSE_WAIT, TIME_WAIT, half-open suspects, RSTs and losses.
    ///
    /// Reads from the daemon's socket when `observer run` serves one here (no root needed for
    /// members of the socket's group); otherwise loads the programs itself, as `observer watch`
    /// does (root needed). The title line says which.
    ///
    /// Panes: 1 Listeners (port, accept queue and its limit, handshakes in SYN_RECV,
    /// connections closed or reset by the peer before accept(), per second), 2 Processes
    /// (sockets per state, oldest CLOSE_WAIT), 3 CLOSE_WAIT (oldest first, with the holder),
    /// 4 TIME_WAIT by destination (and the share of the ephemeral port range it holds),
    /// 5 Half-open suspects, 6 RSTs by class, 7 Losses (every counter of lost or missed
    /// events, and the event rate).
    ///
    /// Keys: q quits, space pauses, tab and 1-7 switch panes, s sorts on the next column, r
    /// reverses it, arrows scroll, ? shows them all. Colours only on a terminal, never with
    /// NO_COLOR set.
    #[command(after_help = "Examples:\n  \
        observer top                               from the daemon (or standalone as root)\n  \
        observer top --port 443 --interval 5       rows about port 443, every 5 s\n  \
        sudo observer top --standalone             without the daemon\n  \
        observer top --socket /tmp/observer.sock   a daemon serving another socket")]
    Top(TopArgs),

    /// Check a configuration file and show the rules it gives, without starting anything.
    ///
    /// Errors name the line, the column and the field, and say what to write instead. Exits 0
    /// when the file is valid, 1 otherwise.
    #[command(after_help = "Examples:\n  \
        observer check-config\n  \
        observer check-config deploy/observer.toml")]
    CheckConfig(CheckConfigArgs),

    /// Check that this host has what observer needs, and what each missing piece costs.
    ///
    /// Kernel version, BTF, tracefs, capabilities, every tracepoint used, the RST reason field,
    /// the TIME_WAIT timer symbol; finally the programs are loaded and attached once. Exits 0
    /// when observer can run (possibly with degraded features), 1 when it cannot.
    Doctor(DoctorArgs),

    /// Print a shell completion script (bash, zsh, fish, elvish or powershell).
    #[command(after_help = "Examples:\n  \
        observer completions bash > /etc/bash_completion.d/observer\n  \
        observer completions zsh > ~/.zfunc/_observer")]
    Completions(CompletionsArgs),

    /// Print the man page (roff).
    #[command(hide = true)]
    Manpage,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file (TOML). Default: /etc/observer/observer.toml when it exists.
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Address to serve /metrics and /alerts on (overrides metrics.listen).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// Kernel ring buffer size, shared equally by one ring per online CPU: "auto", or a power
    /// of two from 4K to 256M (overrides kernel.ring_buffer_size).
    #[arg(long, value_name = "BYTES")]
    pub ring_buffer_size: Option<RingBufferSize>,

    /// Most sockets tracked at once (overrides tracker.max_sockets).
    #[arg(long, value_name = "N")]
    pub max_sockets: Option<usize>,

    /// Where restart state is kept (overrides tracker.state_file; "" keeps none).
    #[arg(long, value_name = "PATH", value_parser = path_or_empty())]
    pub state_file: Option<PathBuf>,

    /// Append alert state changes to this JSON-lines file (overrides alerts.file).
    #[arg(long, value_name = "PATH")]
    pub alerts_file: Option<PathBuf>,

    /// Push alerts to this Alertmanager, e.g. http://127.0.0.1:9093 (overrides
    /// alerts.alertmanager.url).
    #[arg(long, value_name = "URL")]
    pub alertmanager_url: Option<String>,

    /// Unix socket serving live data to `observer watch` and `observer top` (overrides
    /// socket.path; "" serves none). Default /run/observer/observer.sock.
    #[arg(long, value_name = "PATH", value_parser = path_or_empty())]
    pub socket: Option<PathBuf>,

    /// Permission bits of the socket, in octal: who may connect (overrides socket.mode;
    /// default 0660, owner and group).
    #[arg(long, value_name = "MODE", value_parser = observer::config::parse_mode)]
    pub socket_mode: Option<u32>,

    /// Group of the socket, by name or number: its members may connect without root
    /// (overrides socket.group).
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
}

/// A path where "" means "none": clap's own path parser refuses an empty value.
fn path_or_empty() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    OsStringValueParser::new().map(PathBuf::from)
}

impl RunArgs {
    /// The flags given, over `config`.
    pub fn apply_to(&self, config: &mut Config) {
        if let Some(listen) = self.listen {
            config.metrics.listen = listen;
        }
        if let Some(size) = self.ring_buffer_size {
            config.kernel.ring_buffer_size = size;
        }
        if let Some(n) = self.max_sockets {
            config.tracker.max_sockets = n;
        }
        if let Some(path) = &self.state_file {
            config.tracker.state_file = (!path.as_os_str().is_empty()).then(|| path.clone());
        }
        if let Some(path) = &self.alerts_file {
            config.alerts.file = Some(path.clone());
        }
        if let Some(path) = &self.socket {
            config.socket.path = (!path.as_os_str().is_empty()).then(|| path.clone());
        }
        if let Some(mode) = self.socket_mode {
            config.socket.mode = mode;
        }
        if let Some(group) = &self.socket_group {
            config.socket.group = Some(group.clone());
        }
        if let Some(url) = &self.alertmanager_url {
            match &mut config.alerts.alertmanager {
                Some(am) => am.url.clone_from(url),
                None => {
                    config.alerts.alertmanager = Some(AlertmanagerConfig::with_url(url.clone()));
                }
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Seconds between refreshes (fractions allowed: 0.5).
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_interval)]
    pub interval: Duration,

    /// Rows asked for in each list (CLOSE_WAIT sockets, processes, destinations, suspects);
    /// the totals count every one.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub rows: usize,

    #[command(flatten)]
    pub filter: FilterArgs,

    #[command(flatten)]
    pub source: SourceArgs,

    /// Standalone only: most sockets tracked at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_SOCKETS)]
    pub max_sockets: usize,
}

impl TopArgs {
    pub fn into_options(self) -> TopOptions {
        TopOptions {
            source: self.source.into_source(),
            filter: self.filter.into_filter(),
            interval: self.interval,
            listed: self.rows.max(1),
            load: LoadOptions::sized(RingBufferSize::Auto),
            max_sockets: self.max_sockets,
            half_open_after: Duration::from_nanos(observer::track::DEFAULT_HALF_OPEN_AFTER_NS),
        }
    }
}

/// A refresh interval in seconds, from 0.1 to an hour.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let seconds: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds (e.g. 1, 0.5, 5)"))?;
    if !(0.1..=3600.0).contains(&seconds) {
        return Err(format!("`{s}`: the interval is from 0.1 to 3600 seconds"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The file to check (default: /etc/observer/observer.toml).
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// The configuration `observer run` uses, for the checks it changes (the kubelet's log
    /// directory, whether sockets' cgroups are read). Default: /etc/observer/observer.toml
    /// when it exists.
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// The filters of `observer watch` and `observer top`.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Show only connections with this local or remote port.
    #[arg(long, value_name = "PORT")]
    pub port: Vec<u16>,

    /// Show only connections with this local or remote address, or one inside this network
    /// (CIDR, e.g. 10.0.0.0/8 or `fd00::/8`).
    #[arg(long, value_name = "ADDR[/LEN]", value_parser = observer::wire::filter::parse_net)]
    pub addr: Vec<IpNet>,

    /// Show only transitions from or to this state (e.g. established, close-wait, fin-wait2).
    #[arg(long, value_name = "STATE", value_parser = observer::wire::filter::parse_state)]
    pub state: Vec<TcpState>,

    /// Show only sockets owned by this process id. The owner is learnt from the transitions it
    /// drives (connect, listen, close, shutdown); earlier transitions of an accepted socket
    /// cannot be attributed.
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,

    /// Show only IPv4 connections.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// Show only IPv6 connections.
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,

    /// Show only sockets in this network namespace (inode number, as `stat -Lc %i
    /// /proc/PID/ns/net` prints it).
    #[arg(long, value_name = "INODE")]
    pub netns: Vec<u32>,

    /// Show only lines about sockets created in this systemd unit (`nginx.service`), as
    /// their cgroup (v2) names it.
    #[arg(long, value_name = "UNIT")]
    pub unit: Vec<String>,

    /// Show only lines about sockets of this Kubernetes pod: `NAME` or `NAMESPACE/NAME`,
    /// as the kubelet's /var/log/containers names it.
    #[arg(long, value_name = "POD")]
    pub pod: Vec<String>,

    /// Show only lines about sockets in this cgroup (v2) or below it: a path relative to
    /// the cgroup2 mount, e.g. `/system.slice` or `/kubepods.slice`.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Vec<String>,
}

impl FilterArgs {
    pub fn into_filter(self) -> Filter {
        let family = match (self.ipv4, self.ipv6) {
            (true, _) => Some(Family::Ipv4),
            (_, true) => Some(Family::Ipv6),
            _ => None,
        };
        Filter {
            ports: self.port,
            nets: self.addr,
            states: self.state,
            pids: self.pid,
            family,
            netns: self.netns,
            units: self.unit,
            pods: self.pod,
            cgroups: self.cgroup,
        }
    }
}

/// Where `observer watch` and `observer top` get their data.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Load the programs in this process (needs root), even when a daemon serves its socket.
    /// Without it, the daemon's socket is used when it exists and this user may open it (its
    /// group's members may, without root), and the programs are loaded here otherwise.
    #[arg(long)]
    pub standalone: bool,

    /// The daemon's socket (default /run/observer/observer.sock).
    #[arg(
        long,
        value_name = "PATH",
        env = "OBSERVER_SOCKET",
        conflicts_with = "standalone"
    )]
    pub socket: Option<PathBuf>,
}

impl SourceArgs {
    pub fn into_source(self) -> Source {
        Source::new(self.socket, self.standalone)
    }
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub filter: FilterArgs,

    #[command(flatten)]
    pub source: SourceArgs,

    /// One JSON object per line instead of text (fields are listed in the README).
    #[arg(long)]
    pub json: bool,

    /// Exit after showing this many lines (transitions, RSTs, retransmissions, errors).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    /// Size of the kernel ring buffers, shared equally by one ring per online CPU: "auto"
    /// (enough for the expiry burst of every timewait socket the host keeps,
    /// net.ipv4.tcp_max_tw_buckets: 4M to 64M), or a power of two from 4K to 256M (suffixes K,
    /// M, G). Raise it if events are reported lost because the ring buffer was full.
    #[arg(long, value_name = "BYTES", default_value_t = RingBufferSize::Auto)]
    pub ring_buffer_size: RingBufferSize,

    /// Most sockets tracked at once (and, separately, most timewait sockets). When full, the
    /// oldest socket is evicted and counted. About 130 bytes each (140 for a timewait socket).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_SOCKETS)]
    pub max_sockets: usize,

    /// Also print the tracker's state every SECONDS: sockets per state, the CLOSE_WAIT list
    /// with ages and owners, TIME_WAIT ends, RSTs by meaning, connections closed before
    /// accept(), half-open suspects with ages and owners, connection errors by cause and
    /// state, retransmission counts (SYN-ACKs by listening port), and every loss counter.
    #[arg(long, value_name = "SECONDS")]
    pub summary: Option<u64>,

    /// Resolve the process holding a CLOSE_WAIT socket (through /proc/PID/fd) once it has been
    /// in CLOSE_WAIT this long.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub owner_after: u64,

    /// Show a connection as a suspected half-open connection (HALF-OPEN?) once it has
    /// retransmitted without progress this long (e.g. 10s, 500ms, 2m; a bare number is
    /// seconds).
    ///
    /// A half-open connection is one whose peer is gone without a FIN or an RST: the peer host
    /// crashed or rebooted, a NAT or firewall dropped the connection's state, a link went
    /// down. This end does not know: its data is never acknowledged, so it retransmits with
    /// exponential backoff until tcp_retries2 (about 15 minutes by default) or
    /// TCP_USER_TIMEOUT gives up with ETIMEDOUT, shown as a TIMEOUT line. Meanwhile the
    /// application waits. A connection whose retransmissions stop making progress (no ACK for
    /// new data) for this long is a suspect; a lost segment on a live path recovers well
    /// within it. An idle connection, with nothing to send, never retransmits: only keepalive
    /// finds its peer gone (a keepalive_timeout TIMEOUT line). --summary lists the current
    /// suspects.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub half_open_after: Duration,

    /// Compare with sock_diag this often: sockets whose end was lost are dropped, sockets
    /// whose start was lost are added; both are counted.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub reconcile_every: u64,

    /// Also evaluate the alert rules (the built-in ones, or those of --config) and show each
    /// alert that becomes pending, fires or resolves, as `observer run` would deliver it.
    #[arg(long)]
    pub alerts: bool,

    /// Configuration file whose alert rules --alerts evaluates (same format as `observer
    /// run`'s; only its [alerts] table is used).
    #[arg(long, value_name = "PATH", requires = "alerts")]
    pub config: Option<PathBuf>,
}

impl WatchArgs {
    /// The options, with `alerts` the configuration whose rules --alerts evaluates.
    pub fn into_options(self, alerts: Option<&Config>) -> WatchOptions {
        WatchOptions {
            source: self.source.into_source(),
            load: LoadOptions::sized(self.ring_buffer_size),
            filter: self.filter.into_filter(),
            json: self.json,
            count: self.count,
            max_sockets: self.max_sockets,
            summary_every: self.summary.map(std::time::Duration::from_secs),
            owner_after: std::time::Duration::from_secs(self.owner_after),
            reconcile_every: std::time::Duration::from_secs(self.reconcile_every.max(1)),
            half_open_after: self.half_open_after,
            alerts: alerts.map(|c| WatchAlerts {
                rules: c.effective_rules(),
                max_per_rule: c.alerts.max_alerts_per_rule,
                evaluation_interval: c.alerts.evaluation_interval,
            }),
        }
    }
}

/// A duration with units ("10s", "1m 30s", "500ms", as in the configuration file), or a bare
/// number of seconds like the other watch options take.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let duration = if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("`{s}` is too many seconds"))?
    } else {
        humantime::parse_duration(t).map_err(|_| {
            format!("`{s}` is not a duration; use a number with a unit such as 10s, 500ms, 2m")
        })?
    };
    if duration.is_zero() {
        return Err(format!("`{s}` must be longer than zero"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ring_sizes_parse_as_the_configuration_file_takes_them() {
        let run = Cli::try_parse_from(["observer", "run", "--ring-buffer-size", "16M"]).unwrap();
        let Command::Run(args) = run.command else {
            panic!("run")
        };
        assert_eq!(args.ring_buffer_size, Some(RingBufferSize::Bytes(16 << 20)));
        let err = Cli::try_parse_from(["observer", "watch", "--ring-buffer-size", "1G"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("from 4K to 256M"), "{err}");
    }

    #[test]
    fn an_empty_path_turns_the_state_file_and_the_socket_off() {
        let parse = |args: &[&str]| {
            let Command::Run(run) = Cli::try_parse_from(args).unwrap().command else {
                panic!("parsed as run")
            };
            let mut config = Config::default();
            run.apply_to(&mut config);
            (config.tracker.state_file, config.socket.path)
        };
        let (state, socket) = parse(&["observer", "run"]);
        assert!(state.is_some() && socket.is_some());
        assert_eq!(
            parse(&["observer", "run", "--state-file", "", "--socket", ""]),
            (None, None)
        );
        assert_eq!(
            parse(&[
                "observer",
                "run",
                "--state-file",
                "/tmp/s",
                "--socket",
                "/tmp/o.sock"
            ]),
            (Some("/tmp/s".into()), Some("/tmp/o.sock".into()))
        );
    }

    #[test]
    fn durations_parse_with_units_or_as_seconds() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("12"), Ok(Duration::from_secs(12)));
        assert!(
            parse_duration("0s")
                .unwrap_err()
                .contains("longer than zero")
        );
        assert!(
            parse_duration("5 parsecs")
                .unwrap_err()
                .contains("such as 10s")
        );
    }

    #[test]
    fn half_open_threshold_defaults_to_ten_seconds() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            let Command::Watch(args) = cli.command else {
                panic!("parsed as watch")
            };
            args.into_options(None).half_open_after
        };
        assert_eq!(
            parse(&["observer", "watch"]),
            Duration::from_nanos(observer::track::DEFAULT_HALF_OPEN_AFTER_NS)
        );
        assert_eq!(
            parse(&["observer", "watch", "--half-open-after", "3s"]),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn filters_parse_from_the_command_line() {
        let cli = Cli::try_parse_from([
            "observer",
            "watch",
            "--port",
            "80",
            "--port",
            "443",
            "--addr",
            "10.0.0.0/8",
            "--addr",
            "::1",
            "--state",
            "close-wait",
            "-6",
            "--netns",
            "4026531840",
        ])
        .unwrap();
        let Command::Watch(args) = cli.command else {
            panic!("parsed as watch")
        };
        let o = args.into_options(None);
        assert_eq!(o.filter.ports, [80, 443]);
        assert_eq!(o.filter.nets.len(), 2);
        assert_eq!(o.filter.states, [TcpState::CloseWait]);
        assert_eq!(o.filter.family, Some(Family::Ipv6));
        assert_eq!(o.filter.netns, [4_026_531_840]);
        let err = Cli::try_parse_from(["observer", "watch", "--state", "closed"]).unwrap_err();
        assert!(err.to_string().contains("use one of: established"), "{err}");
        assert!(Cli::try_parse_from(["observer", "watch", "-4", "-6"]).is_err());
    }
}
