//! The sd_notify protocol: tells systemd when the daemon is ready, reloading or stopping, what
//! it is doing, and that it is still alive (the watchdog).
//!
//! Written against std rather than a crate because the daemon needs both a socket given by
//! path (tests) and abstract-namespace sockets (`NOTIFY_SOCKET=@...`).

use std::{
    ffi::OsStr,
    os::{
        linux::net::SocketAddrExt as _,
        unix::{
            ffi::OsStrExt as _,
            net::{SocketAddr, UnixDatagram},
        },
    },
    path::Path,
    time::Duration,
};

use crate::clock::mono_now_ns;

/// How long a send may block: systemd drains its socket promptly, and a stuck manager must not
/// stall the daemon's single-threaded loop.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Talks to systemd when started with Type=notify (NOTIFY_SOCKET set); does nothing otherwise.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: Option<SocketAddr>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. The variables stay set: removing
    /// them is unsound once threads run, and the daemon starts no children that would inherit
    /// them.
    #[must_use]
    pub fn from_env() -> Self {
        Self::from_vars(
            std::env::var_os("NOTIFY_SOCKET").as_deref(),
            std::env::var_os("WATCHDOG_USEC").as_deref(),
            std::env::var_os("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
    }

    /// Sends to `path`; a path starting with '@' names an abstract socket, as in NOTIFY_SOCKET.
    #[must_use]
    pub fn to_socket(path: &Path, watchdog: Option<Duration>) -> Self {
        let socket = address(path.as_os_str());
        Self {
            watchdog: watchdog.filter(|_| socket.is_some()),
            socket,
        }
    }

    fn from_vars(
        notify_socket: Option<&OsStr>,
        watchdog_usec: Option<&OsStr>,
        watchdog_pid: Option<&OsStr>,
        our_pid: u32,
    ) -> Self {
        let socket = notify_socket.and_then(address);
        // WATCHDOG_PID names the process the watchdog is meant for: a watched process that
        // started us without clearing its environment passes on its own watchdog.
        let ours = watchdog_pid.is_none_or(|pid| parse::<u32>(pid) == Some(our_pid));
        let watchdog = watchdog_usec
            .and_then(parse::<u64>)
            .filter(|&usec| usec > 0 && ours && socket.is_some())
            .map(Duration::from_micros);
        Self { socket, watchdog }
    }

    /// Whether notifications go anywhere.
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.socket.is_some()
    }

    /// Startup is complete: systemd considers the unit started.
    pub fn ready(&self, status: &str) {
        self.send(&["READY=1", &status_line(status)]);
    }

    /// What the daemon is doing, shown by `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&[&status_line(status)]);
    }

    /// A reload has begun. systemd 253+ (Type=notify-reload) requires MONOTONIC_USEC to tell
    /// this reload from an earlier one; older versions ignore it.
    pub fn reloading(&self) {
        let now_usec = mono_now_ns() / 1_000;
        self.send(&["RELOADING=1", &format!("MONOTONIC_USEC={now_usec}")]);
    }

    /// A reload has finished.
    pub fn reloaded(&self, status: &str) {
        self.ready(status);
    }

    /// Shutdown has begun, so systemd does not take the exit for a crash.
    pub fn stopping(&self) {
        self.send(&["STOPPING=1"]);
    }

    /// How often to send WATCHDOG=1: half of WATCHDOG_USEC, None without a watchdog.
    #[must_use]
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|timeout| timeout / 2)
    }

    /// Still alive.
    pub fn watchdog(&self) {
        self.send(&["WATCHDOG=1"]);
    }

    /// One datagram, one assignment per line. Failures are only logged: losing a notification
    /// must not take the daemon down (systemd's timeouts handle a daemon that never reports).
    fn send(&self, lines: &[&str]) {
        let Some(socket) = &self.socket else {
            return;
        };
        let message = lines.join("\n");
        let sent = UnixDatagram::unbound().and_then(|sender| {
            sender.set_write_timeout(Some(SEND_TIMEOUT))?;
            sender.send_to_addr(message.as_bytes(), socket)
        });
        match sent {
            Ok(n) if n == message.len() => {}
            Ok(n) => log::debug!(
                "sd_notify: sent {n} of {} bytes of {message:?}",
                message.len()
            ),
            Err(e) => log::debug!("sd_notify: sending {message:?} failed: {e}"),
        }
    }
}

/// NOTIFY_SOCKET as an address: an absolute path, or '@' and an abstract name. Other forms
/// (relative paths, systemd 254's vsock: addresses) are not supported and disable notifying.
fn address(raw: &OsStr) -> Option<SocketAddr> {
    let bytes = raw.as_bytes();
    let parsed = match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(raw),
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        _ => {
            log::debug!(
                "sd_notify: unsupported NOTIFY_SOCKET {}, not notifying",
                raw.display()
            );
            return None;
        }
    };
    match parsed {
        Ok(address) => Some(address),
        Err(e) => {
            log::debug!(
                "sd_notify: bad NOTIFY_SOCKET {}: {e}, not notifying",
                raw.display()
            );
            None
        }
    }
}

fn parse<T: std::str::FromStr>(raw: &OsStr) -> Option<T> {
    raw.to_str()?.parse().ok()
}

/// A newline would end the assignment and start a bogus one.
fn status_line(status: &str) -> String {
    format!("STATUS={}", status.replace('\n', " "))
}

#[cfg(test)]
mod tests {
    use std::{
        ffi::OsString,
        path::PathBuf,
        sync::atomic::{AtomicU32, Ordering},
    };

    use super::*;

    fn os(s: &str) -> OsString {
        OsString::from(s)
    }

    /// A datagram socket bound to a fresh path under the temp dir, removed on drop.
    struct Receiver {
        socket: UnixDatagram,
        dir: PathBuf,
    }

    impl Receiver {
        fn bind() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "observer-notify-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let socket = UnixDatagram::bind(dir.join("notify")).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            Self { socket, dir }
        }

        fn path(&self) -> PathBuf {
            self.dir.join("notify")
        }

        fn next(&self) -> String {
            let mut buf = [0u8; 4096];
            let n = self.socket.recv(&mut buf).expect("a datagram");
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }

        fn is_empty(&self) -> bool {
            self.socket.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 16];
            let empty = self.socket.recv(&mut buf).is_err();
            self.socket.set_nonblocking(false).unwrap();
            empty
        }
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn sends_each_notification_as_one_datagram() {
        let rx = Receiver::bind();
        let n = Notifier::to_socket(&rx.path(), None);
        assert!(n.is_active());

        n.ready("tracking 12 sockets");
        assert_eq!(rx.next(), "READY=1\nSTATUS=tracking 12 sockets");
        n.status("seeding");
        assert_eq!(rx.next(), "STATUS=seeding");
        n.reloaded("reloaded\nconfig");
        assert_eq!(rx.next(), "READY=1\nSTATUS=reloaded config");
        n.stopping();
        assert_eq!(rx.next(), "STOPPING=1");
        n.watchdog();
        assert_eq!(rx.next(), "WATCHDOG=1");
        assert!(rx.is_empty());
    }

    #[test]
    fn reloading_carries_the_monotonic_clock() {
        let rx = Receiver::bind();
        let n = Notifier::to_socket(&rx.path(), None);
        let before = mono_now_ns() / 1_000;
        n.reloading();
        let after = mono_now_ns() / 1_000;

        let got = rx.next();
        let usec = got
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .unwrap_or_else(|| panic!("unexpected datagram {got:?}"));
        let usec: u64 = usec.parse().unwrap();
        assert!(
            (before..=after).contains(&usec),
            "{before} <= {usec} <= {after}"
        );
    }

    #[test]
    fn reaches_an_abstract_socket() {
        let name = format!("observer-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

        let n = Notifier::from_vars(Some(&os(&format!("@{name}"))), None, None, 1);
        assert!(n.is_active());
        n.ready("up");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=up");
    }

    #[test]
    fn without_a_socket_nothing_is_sent() {
        let n = Notifier::from_vars(None, Some(&os("30000000")), None, 1);
        assert!(!n.is_active());
        assert_eq!(n.watchdog_interval(), None);
        n.ready("up");
        n.watchdog();
        n.stopping();
    }

    #[test]
    fn unsupported_addresses_disable_notifying() {
        for raw in ["", "relative/notify", "vsock:2:1234"] {
            let n = Notifier::from_vars(Some(&os(raw)), Some(&os("30000000")), None, 1);
            assert!(!n.is_active(), "{raw:?}");
            assert_eq!(n.watchdog_interval(), None, "{raw:?}");
        }
    }

    #[test]
    fn a_vanished_socket_is_not_fatal() {
        let rx = Receiver::bind();
        let path = rx.path();
        drop(rx);
        let n = Notifier::to_socket(&path, Some(Duration::from_secs(30)));
        assert!(n.is_active());
        n.ready("up");
        n.watchdog();
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout_when_it_is_ours() {
        let sock = os("/run/systemd/notify");
        let usec = os("30000000");
        let interval = |pid: Option<&str>, our_pid| {
            let pid = pid.map(os);
            Notifier::from_vars(Some(&sock), Some(&usec), pid.as_deref(), our_pid)
                .watchdog_interval()
        };
        let half = Some(Duration::from_secs(15));
        assert_eq!(interval(None, 42), half);
        assert_eq!(interval(Some("42"), 42), half);
        assert_eq!(interval(Some("41"), 42), None);
        assert_eq!(interval(Some("not a pid"), 42), None);
    }

    #[test]
    fn a_bad_or_zero_timeout_means_no_watchdog() {
        let sock = os("/run/systemd/notify");
        for usec in ["0", "", "30s", "-1"] {
            let n = Notifier::from_vars(Some(&sock), Some(&os(usec)), None, 1);
            assert!(n.is_active());
            assert_eq!(n.watchdog_interval(), None, "{usec:?}");
        }
    }

    #[test]
    fn to_socket_keeps_the_given_watchdog() {
        let n = Notifier::to_socket(Path::new("/run/x"), Some(Duration::from_secs(10)));
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(5)));
        let n = Notifier::to_socket(Path::new("@abstract"), None);
        assert!(n.is_active());
        assert_eq!(n.watchdog_interval(), None);
    }
}
