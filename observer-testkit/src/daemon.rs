//! `observer run` as a child process of a benchmark, a stress run or a test: started with a
//! configuration that writes nothing outside a temporary directory, and measured from /proc.

use std::{
    io::{self, BufRead as _, BufReader},
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
    /// Its stderr lines, read on a thread.
    log: mpsc::Receiver<String>,
}

impl Daemon {
    /// Starts `binary run` and returns once it serves metrics (programs attached, sock_diag
    /// seed applied), failing after 30 s.
    pub fn start(binary: &str) -> io::Result<Self> {
        Self::start_with(binary, "[alerts]\nlog = false\n", &[])
    }

    /// [`Daemon::start`] with the configuration's other tables (`[metrics]` and
    /// `[tracker]`'s `state_file` come first, in a temporary directory: `{dir}` in `tables` is
    /// that directory) and more command-line arguments.
    pub fn start_with(binary: &str, tables: &str, args: &[&str]) -> io::Result<Self> {
        // A port free now; the daemon binds it a moment later.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let dir =
            std::env::temp_dir().join(format!("observer-bench-{}-{}", std::process::id(), port));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("observer.toml");
        // Restart state only in the temporary directory (by default it would be written to
        // /var/lib).
        let tables = tables.replace("{dir}", &dir.display().to_string());
        let state_file = if tables.contains("state_file") {
            String::new()
        } else {
            "[tracker]\nstate_file = \"\"\n\n".to_owned()
        };
        std::fs::write(
            &config,
            format!("[metrics]\nlisten = \"{addr}\"\n\n{state_file}{tables}"),
        )?;
        // The live-data socket in the temporary directory too, unless the caller places it.
        let socket = dir.join("observer.sock");
        let socket_args: Vec<std::ffi::OsString> =
            if tables.contains("[socket]") || args.contains(&"--socket") {
                Vec::new()
            } else {
                vec!["--socket".into(), socket.clone().into()]
            };
        let mut child = die_with_parent(
            Command::new(binary)
                .arg("run")
                .arg("--config")
                .arg(&config)
                .args(socket_args)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        )
        .spawn()?;
        let (tx, log) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().expect("piped"));
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if line.contains("observing TCP connections") {
                    let _ = ready_tx.send(());
                }
                let _ = tx.send(line);
            }
        });
        let mut daemon = Self {
            child,
            addr,
            dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while ready.recv_timeout(Duration::from_millis(100)).is_err() {
            if Instant::now() >= deadline || daemon.child.try_wait()?.is_some() {
                return Err(io::Error::other(format!(
                    "observer run did not start:\n{}",
                    daemon.log_lines().join("\n")
                )));
            }
        }
        Ok(daemon)
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its live-data socket, unless the caller placed it elsewhere.
    #[must_use]
    pub fn socket(&self) -> PathBuf {
        self.dir.join("observer.sock")
    }

    /// The temporary directory its configuration and state live in.
    #[must_use]
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Resident set size now (VmRSS), bytes.
    #[must_use]
    pub fn rss_bytes(&self) -> u64 {
        status_kib(self.pid(), "VmRSS:") * 1024
    }

    /// Sends a signal (SIGHUP, say) to it.
    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(i32::try_from(self.pid()).expect("pid"), signal) };
    }

    /// SIGKILL, and waits for it to be gone: nothing can be written on the way out.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What it wrote to stderr since the last call.
    pub fn log_lines(&mut self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    /// CPU time (user + system, every thread) so far, in seconds.
    #[must_use]
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(self.pid())
    }

    /// Its CPU time, user and system apart.
    #[must_use]
    pub fn cpu(&self) -> CpuTime {
        process_cpu(self.pid())
    }

    /// Its exact CPU time so far, ns ([`run_ns`]).
    #[must_use]
    pub fn run_ns(&self) -> Option<u64> {
        run_ns(self.pid())
    }

    /// Its main thread's exact CPU time so far, ns: the event loop, where the daemon reads,
    /// decodes and tracks events (the others run sock_diag dumps and walks of /proc).
    #[must_use]
    pub fn main_thread_run_ns(&self) -> Option<u64> {
        let pid = self.pid();
        let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/schedstat")).ok()?;
        parse_schedstat(&text)
    }

    /// Peak resident set size (VmHWM), bytes.
    #[must_use]
    pub fn peak_rss_bytes(&self) -> u64 {
        status_kib(self.pid(), "VmHWM:") * 1024
    }

    /// SIGTERM (the daemon drains its ring buffer and exits), waiting up to 10 s.
    pub fn stop(mut self) -> io::Result<()> {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(i32::try_from(self.pid()).expect("pid"), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(io::Error::other(format!(
                        "observer run exited with {status}"
                    )))
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::other("observer run did not stop within 10 s"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Makes the child get SIGTERM when the process that started it dies, even by a signal: no
/// daemon or tracer outlives an interrupted benchmark.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: prctl is async-signal-safe and touches only the child being set up.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        })
    }
}

/// CPU time of process `pid` (utime + stime of every thread), in seconds.
#[must_use]
pub fn cpu_secs(pid: u32) -> f64 {
    process_cpu(pid).total()
}

/// CPU time of process `pid`, user and system apart.
#[must_use]
pub fn process_cpu(pid: u32) -> CpuTime {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

/// CPU time of thread `tid` of process `pid` (utime + stime), in seconds.
#[must_use]
pub fn thread_cpu_secs(pid: u32, tid: u32) -> f64 {
    stat_cpu(&format!("/proc/{pid}/task/{tid}/stat")).total()
}

/// A process's CPU time from /proc, seconds. Without `CONFIG_IRQ_TIME_ACCOUNTING` (the test
/// machines' kernels) the kernel samples it at each tick: `system` then also holds interrupts
/// and softirqs that ran while the process was the one on the CPU, work not its own.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuTime {
    pub user: f64,
    pub system: f64,
}

impl CpuTime {
    #[must_use]
    pub fn total(&self) -> f64 {
        self.user + self.system
    }

    /// Both times added.
    #[must_use]
    pub fn plus(&self, other: &Self) -> Self {
        Self {
            user: self.user + other.user,
            system: self.system + other.system,
        }
    }

    /// The time spent since `before`.
    #[must_use]
    pub fn since(&self, before: &Self) -> Self {
        Self {
            user: self.user - before.user,
            system: self.system - before.system,
        }
    }
}

/// The CPU time of process `pid` so far, exact: nanoseconds on a CPU of every thread, those
/// gone included, by its CPU-time clock (`clock_getcpuclockid`), where `/proc/PID/stat`
/// rounds to clock ticks (10 ms). `None` when the process is gone.
#[must_use]
pub fn run_ns(pid: u32) -> Option<u64> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid clockid_t to write.
    if unsafe { libc::clock_getcpuclockid(i32::try_from(pid).ok()?, &raw mut clock) } != 0 {
        return None;
    }
    clock_ns(clock)
}

/// The time of `clock`, ns; `None` when it cannot be read.
fn clock_ns(clock: libc::clockid_t) -> Option<u64> {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write.
    if unsafe { libc::clock_gettime(clock, &raw mut t) } != 0 {
        return None;
    }
    Some(u64::try_from(t.tv_sec).ok()? * 1_000_000_000 + u64::try_from(t.tv_nsec).ok()?)
}

/// The first field of a schedstat line: time on a CPU, ns.
fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

fn stat_cpu(path: &str) -> CpuTime {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    parse_stat_cpu(&std::fs::read_to_string(path).unwrap_or_default(), hz)
}

/// utime and stime of a /proc stat line, in seconds at `hz` ticks per second.
#[expect(clippy::cast_precision_loss, reason = "clock ticks, far below 2^52")]
fn parse_stat_cpu(stat: &str, hz: i64) -> CpuTime {
    // Fields after the command name (which may hold spaces and parentheses); utime and stime
    // are 14 and 15.
    let after_comm = stat.rsplit(')').next().unwrap_or_default();
    let mut ticks = after_comm
        .split_whitespace()
        .skip(11)
        .map(|v| v.parse::<u64>().unwrap_or(0));
    let (user, system) = (ticks.next().unwrap_or(0), ticks.next().unwrap_or(0));
    let hz = hz.max(1) as f64;
    CpuTime {
        user: user as f64 / hz,
        system: system as f64 / hz,
    }
}

/// A `kB` line of /proc/PID/status.
#[must_use]
pub fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_system_time_come_from_the_fields_after_the_command() {
        // A command name with a space and a parenthesis; utime 250 and stime 75 ticks.
        let stat = "4242 (obs (x) y) S 1 4242 4242 0 -1 4194560 15164 0 0 0 250 75 0 0 20 0 3 0";
        let cpu = parse_stat_cpu(stat, 100);
        assert_eq!(
            cpu,
            CpuTime {
                user: 2.5,
                system: 0.75
            }
        );
        assert!((cpu.total() - 3.25).abs() < 1e-9);
        let later = CpuTime {
            user: 3.0,
            system: 1.0,
        };
        assert_eq!(
            later.since(&cpu),
            CpuTime {
                user: 0.5,
                system: 0.25
            }
        );
        assert_eq!(
            cpu.plus(&later),
            CpuTime {
                user: 5.5,
                system: 1.75
            }
        );
        assert_eq!(parse_stat_cpu("", 100), CpuTime::default());
    }

    /// This thread's CPU time by `CLOCK_THREAD_CPUTIME_ID`, ns.
    fn thread_cpu_ns() -> u64 {
        clock_ns(libc::CLOCK_THREAD_CPUTIME_ID).expect("this thread's CPU clock")
    }

    /// A thread born and gone between two readings still counts: the reason for a process
    /// clock rather than each thread's schedstat, and for it rather than /proc's ticks.
    #[test]
    fn a_process_run_time_holds_its_threads_gone() {
        let pid = std::process::id();
        let before = run_ns(pid).expect("this process's CPU clock");
        let spun = std::thread::spawn(|| {
            let start = thread_cpu_ns();
            while thread_cpu_ns() - start < 200_000_000 {}
            thread_cpu_ns() - start
        })
        .join()
        .unwrap();
        let ran = run_ns(pid).unwrap() - before;
        assert!(
            ran >= spun,
            "{ran} ns counted for {spun} ns spun by a thread now gone"
        );
        assert_eq!(run_ns(u32::MAX), None, "no such process");
    }

    #[test]
    fn schedstat_gives_time_on_a_cpu_first() {
        assert_eq!(parse_schedstat("123456789 2000 17\n"), Some(123_456_789));
        assert_eq!(parse_schedstat(""), None);
    }
}
