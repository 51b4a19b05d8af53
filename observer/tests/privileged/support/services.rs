//! Real programs the daemon tests run beside it: `observer run` itself, Prometheus and
//! Alertmanager (Debian's packages), each on a free 127.0.0.1 port, stopped on drop.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// Whether `binary` exists. Without it the test is skipped loudly, except under CI=true, whose
/// set-up (`cargo xtask test`) installs it.
#[must_use]
pub fn have(binary: &str, test: &str) -> bool {
    if Path::new(binary).exists() {
        return true;
    }
    super::skip::skip(
        test,
        &format!("{binary} is not installed (cargo xtask test installs it)"),
    );
    false
}

/// A port nothing listens on right now.
#[must_use]
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    #[must_use]
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("observer-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    #[must_use]
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// GET over HTTP/1.0 (the server closes the connection after the response).
pub fn get(
    addr: SocketAddr,
    path_and_query: &str,
    accept: Option<&str>,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    // One write: a request in pieces would wait on Nagle for the server's delayed ACK.
    let request = format!("GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    Ok(Response {
        status,
        content_type,
        body: body.to_owned(),
    })
}

/// Percent-encodes a query parameter value.
#[must_use]
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A child process killed on drop, its stderr kept (and echoed) for failure messages.
pub struct Process {
    pub name: &'static str,
    child: Child,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Process {
    pub fn spawn(name: &'static str, cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = BufReader::new(child.stderr.take().unwrap());
        let keep = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                if name == "observer" {
                    eprintln!("observer: {line}");
                }
                keep.lock().unwrap().push(line);
            }
        });
        Self {
            name,
            child,
            stderr,
        }
    }

    /// Its stderr so far, joined.
    #[must_use]
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM and waits up to 10 s for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(i32::try_from(self.child.id()).unwrap(), libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and waits for it to be gone: nothing can be written on the way out.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `observer run --config CONFIG`, returned once it serves /metrics on `addr`. Its live-data
/// socket is `observer.sock` beside the configuration, unless the configuration places it.
pub fn observer_run(config: &Path, addr: SocketAddr) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_observer"));
    command.args(["run", "--config"]).arg(config);
    let placed = std::fs::read_to_string(config).is_ok_and(|c| c.contains("[socket]"));
    if !placed && let Some(dir) = config.parent() {
        command.arg("--socket").arg(dir.join("observer.sock"));
    }
    let mut process = Process::spawn("observer", &mut command);
    wait_for(Duration::from_mins(1), "observer to serve /metrics", || {
        if let Some(status) = process.exited() {
            panic!("observer run exited ({status}):\n{}", process.log());
        }
        get(addr, "/metrics", None).ok().filter(|r| r.status == 200)
    });
    process
}
