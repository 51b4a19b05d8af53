//! What the packaging tests share: the repository's files, the tools they run, python3 with
//! PyYAML and kubernetes-validate, and a temporary directory.
//!
//! The tools are the ones `cargo xtask test` installs: kubernetes-validate from PyPI (into
//! target/python-tools unless python3 already has it; it brings PyYAML), promtool (Debian's
//! `prometheus`), and dpkg-deb, which every Debian has. Without one, the tests that need it are
//! skipped loudly, except under CI=true, where that is a failure. lintian is used when it is
//! installed, never required.

use observer_testkit::skip::skip;
use std::{
    ffi::OsString,
    io::ErrorKind,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

/// Where xtask's set-up installs kubernetes-validate when python3 cannot import it.
const PYTHON_TOOLS: &str = "target/python-tools";

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// `program ARGS`, or `None` when the program is not installed.
pub fn run(program: &str, args: &[&str]) -> Option<Output> {
    match Command::new(program).args(args).output() {
        Ok(output) => Some(output),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => panic!("running {program}: {e}"),
    }
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

// ---- python3 with kubernetes-validate and PyYAML

/// python3, with target/python-tools on its path when that is where the modules are.
pub struct Python {
    path: Option<OsString>,
}

impl Python {
    /// The first python3 set-up that imports `modules`; `None` (after a loud skip, or a
    /// failure under CI=true) when there is none.
    pub fn with(test: &str, modules: &str) -> Option<Self> {
        let tools = repo(PYTHON_TOOLS);
        let mut extended = OsString::from(&tools);
        if let Some(existing) = std::env::var_os("PYTHONPATH") {
            extended.push(":");
            extended.push(existing);
        }
        for path in [None, Some(extended)] {
            let python = Self { path };
            match python
                .command()
                .args(["-c", &format!("import {modules}")])
                .output()
            {
                Ok(out) if out.status.success() => return Some(python),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                Err(e) => panic!("running python3: {e}"),
            }
        }
        skip(
            test,
            &format!(
                "needs python3 able to import {modules} (PyPI's kubernetes-validate brings them; \
                 `cargo xtask test` installs it into {PYTHON_TOOLS})"
            ),
        );
        None
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new("python3");
        if let Some(path) = &self.path {
            cmd.env("PYTHONPATH", path);
        }
        cmd
    }

    /// Every document of a YAML file, as JSON.
    pub fn yaml(&self, path: &Path) -> Vec<Value> {
        let out = self
            .command()
            .args([
                "-c",
                "import json, sys, yaml\n\
                 with open(sys.argv[1]) as f:\n    \
                     docs = [d for d in yaml.safe_load_all(f) if d is not None]\n\
                 json.dump(docs, sys.stdout)",
            ])
            .arg(path)
            .output()
            .expect("running python3");
        assert!(
            out.status.success(),
            "{} is not valid YAML:\n{}",
            path.display(),
            text(&out)
        );
        match serde_json::from_slice(&out.stdout).expect("python3 printed JSON") {
            Value::Array(docs) => docs,
            other => panic!("expected a list of documents, got {other}"),
        }
    }
}

/// A directory of this test process, removed at the end of the test.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "observer-package-files-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
