//! bcc's tcpstates (the libbpf-tools C build) as the comparison tracer: every TCP transition
//! of the host, one line each, read from a pipe and counted.

use std::{
    collections::HashMap,
    io::{self, BufRead as _, BufReader, Read as _},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use observer::load::prog_stats;
use observer_testkit::{churn::ADDR_PREFIX, daemon::die_with_parent};

pub const PATH: &str = "/usr/sbin/tcpstates";

/// What its output said, counted as it arrives.
#[derive(Default)]
struct Lines {
    /// Every transition line.
    all: u64,
    /// Lines whose addresses are the load's.
    load: u64,
    /// Lines of listeners on the unspecified address, by port: the load's are added at the end,
    /// when its listeners' ports are known.
    unspecified: HashMap<u16, u64>,
}

pub struct Tcpstates {
    child: Child,
    lines: Arc<Mutex<Lines>>,
    reader: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<String>>,
}

/// What it received over a phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct Received {
    pub all_lines: u64,
    pub load_lines: u64,
    /// Events it reported lost itself ("lost N events on CPU #M").
    pub lost: u64,
}

impl Tcpstates {
    /// Starts it and returns once its program is attached, failing after 20 s.
    pub fn start() -> io::Result<Self> {
        let mut child = die_with_parent(
            Command::new(PATH)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .spawn()?;
        let lines = Arc::new(Mutex::new(Lines::default()));
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let counted = lines.clone();
        let reader = std::thread::spawn(move || {
            let prefix = format!("{}.{}.", ADDR_PREFIX[0], ADDR_PREFIX[1]);
            for line in stdout.lines().map_while(Result::ok) {
                // SKADDR PID COMM LADDR LPORT RADDR RPORT OLDSTATE -> NEWSTATE MS; the command
                // name may hold spaces, so fields are counted from the end.
                let fields: Vec<&str> = line.split_whitespace().collect();
                let n = fields.len();
                if n < 10 || fields[n - 3] != "->" {
                    continue;
                }
                let (laddr, lport, raddr) = (fields[n - 8], fields[n - 7], fields[n - 6]);
                let mut c = counted.lock().expect("not poisoned");
                c.all += 1;
                if laddr.starts_with(&prefix) || raddr.starts_with(&prefix) {
                    c.load += 1;
                } else if laddr == "0.0.0.0"
                    && let Ok(port) = lport.parse::<u16>()
                {
                    *c.unspecified.entry(port).or_default() += 1;
                }
            }
        });
        let mut err = child.stderr.take().expect("piped");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        let mut t = Self {
            child,
            lines,
            reader: Some(reader),
            stderr: Some(stderr),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !prog_stats::attached_by(t.pid()).is_ok_and(|p| !p.is_empty()) {
            if Instant::now() >= deadline || t.child.try_wait()?.is_some() {
                let _ = t.child.kill();
                let _ = t.child.wait();
                let stderr = t.stderr.take().and_then(|h| h.join().ok());
                return Err(io::Error::other(format!(
                    "{PATH} did not attach its program: {}",
                    stderr.unwrap_or_default().trim()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(t)
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it with SIGINT (it flushes its output and exits) and returns what it received;
    /// `listener_ports` are the load's listeners, whose lines show the unspecified address.
    pub fn finish(mut self, listener_ports: &[u16]) -> io::Result<Received> {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(i32::try_from(self.pid()).expect("pid"), libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                return Err(io::Error::other(format!("{PATH} did not stop on SIGINT")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let lost = stderr
            .lines()
            .filter_map(|l| l.trim().strip_prefix("lost ")?.split_whitespace().next())
            .filter_map(|n| n.parse::<u64>().ok())
            .sum();
        let lines = self.lines.lock().expect("not poisoned");
        let listeners: u64 = listener_ports
            .iter()
            .filter_map(|p| lines.unspecified.get(p))
            .sum();
        Ok(Received {
            all_lines: lines.all,
            load_lines: lines.load + listeners,
            lost,
        })
    }
}

impl Drop for Tcpstates {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
