//! Installs the toolchain pieces the eBPF build needs, idempotently, saying what it does.
//!
//! - the nightly toolchain's `rust-src` (the eBPF crate is built with `-Z build-std=core`);
//! - `bpf-linker`, built against the LLVM that ships inside the nightly toolchain: the default
//!   build wants a system LLVM that distributions do not have.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use super::run_command as status;

const NIGHTLY: &str = "nightly";

pub fn run() -> anyhow::Result<()> {
    ensure_nightly()?;
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    Ok(())
}

/// Debian packages the integration tests run for real: Prometheus (and promtool) scrapes the
/// daemon and checks the shipped rules; Alertmanager receives its alerts; nft drops packets in
/// test namespaces; tmux runs `observer top` in a pane a test reads.
const TEST_PACKAGES: [(&str, &str); 4] = [
    ("prometheus", "/usr/bin/promtool"),
    (
        "prometheus-alertmanager",
        "/usr/bin/prometheus-alertmanager",
    ),
    ("nftables", "/usr/sbin/nft"),
    ("tmux", "/usr/bin/tmux"),
];

/// bcc's tcpstates, built with libbpf (no kernel headers needed): the benchmark's comparison.
const TCPSTATES: &str = "/usr/sbin/tcpstates";

/// Installs what `cargo xtask bench` compares with, when apt-get can. Without it the
/// benchmark runs without the tcpstates phases, and says so.
pub fn bench_tools() {
    if Path::new(TCPSTATES).exists() {
        return;
    }
    let installed = if super::is_root() && Path::new("/usr/bin/apt-get").exists() {
        eprintln!("setup: installing libbpf-tools with apt-get (tcpstates, for the benchmark)");
        apt_get_install(&["libbpf-tools"])
    } else {
        false
    };
    if !installed || !Path::new(TCPSTATES).exists() {
        eprintln!(
            "\n*** setup: {TCPSTATES} is missing and libbpf-tools could not be installed \
             (needs root, apt-get and Debian's libbpf-tools): the benchmark runs WITHOUT the \
             tcpstates comparison ***\n"
        );
    }
}

/// `apt-get install -y` of `packages`, after `apt-get update` if the first try fails (a fresh
/// machine may have no package lists yet). Whether it succeeded.
pub fn apt_get_install(packages: &[&str]) -> bool {
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    install()
        || (status(
            Command::new("apt-get")
                .arg("update")
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .is_ok()
            && install())
}

/// Installs what the tests need beyond the build, when apt-get can (as root on Debian).
/// Without it the tests that need these programs skip loudly (and fail under CI=true).
pub fn test_tools() -> anyhow::Result<()> {
    kubernetes_validate()?;
    let missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .filter(|(_, binary)| !Path::new(binary).exists())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !super::is_root() || !Path::new("/usr/bin/apt-get").exists() {
        eprintln!(
            "setup: {} not installed and cannot be installed here (needs root and apt-get); \
             the tests that run them will be skipped",
            missing.join(", ")
        );
        return Ok(());
    }
    eprintln!(
        "setup: installing {} with apt-get (for the tests)",
        missing.join(", ")
    );
    if !apt_get_install(&missing) {
        bail!(
            "apt-get install {} failed; see its output above",
            missing.join(" ")
        );
    }
    Ok(())
}

/// Where `kubernetes_validate()` installs the PyPI package when python3 cannot import it;
/// observer/tests/packaging/tools.rs looks there too.
const PYTHON_TOOLS_DIR: &str = "target/python-tools";

/// Installs PyPI's `kubernetes-validate` (which brings PyYAML), with which the tests check the
/// Kubernetes manifests offline, when python3 cannot import it yet. It goes into
/// target/python-tools with `pip install --target`: Debian's python3 refuses installs into
/// its own environment (PEP 668), and the system stays untouched. Without python3 or pip the
/// manifest tests skip loudly (and fail under CI=true).
pub fn kubernetes_validate() -> anyhow::Result<()> {
    let dir = super::workspace_root().join(PYTHON_TOOLS_DIR);
    let importable = |with_dir: bool| {
        let mut cmd = Command::new("python3");
        cmd.args(["-c", "import kubernetes_validate, yaml"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if with_dir {
            cmd.env("PYTHONPATH", &dir);
        }
        cmd.status().is_ok_and(|s| s.success())
    };
    if importable(false) || importable(true) {
        return Ok(());
    }
    let has_pip = || {
        Command::new("python3")
            .args(["-m", "pip", "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has_pip() {
        if !super::is_root() || !Path::new("/usr/bin/apt-get").exists() {
            eprintln!(
                "setup: kubernetes-validate needs python3 and pip, which are missing and cannot \
                 be installed here (needs root and apt-get); the manifest tests will be skipped"
            );
            return Ok(());
        }
        eprintln!(
            "setup: installing python3-pip with apt-get (to install kubernetes-validate for the tests)"
        );
        status(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "python3-pip"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .context("apt-get install python3-pip failed; see its output above")?;
    }
    eprintln!(
        "setup: installing kubernetes-validate from PyPI into {} (checks the Kubernetes \
         manifests offline, for the tests)",
        dir.display()
    );
    status(
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--upgrade", "--target"])
            .arg(&dir)
            // Pinned: the tests validate against the Kubernetes versions this release bundles.
            .arg("kubernetes-validate==1.37.0")
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .env("PIP_ROOT_USER_ACTION", "ignore"),
    )
    .context("pip install kubernetes-validate failed; see its output above")
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    Ok(String::from_utf8_lossy(&output_bytes(cmd)?).into_owned())
}

/// A command's stdout; its stderr passes through, and failure is an error naming it.
pub fn output_bytes(cmd: &mut Command) -> anyhow::Result<Vec<u8>> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({})", out.status);
    }
    Ok(out.stdout)
}

fn ensure_nightly() -> anyhow::Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if toolchains.lines().any(|l| l.starts_with("nightly-")) {
        return Ok(());
    }
    eprintln!("setup: installing the nightly Rust toolchain (the eBPF programs need it)");
    status(Command::new("rustup").args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]))
}

fn ensure_rust_src() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("setup: installing rust-src for the nightly toolchain (needed by -Z build-std=core)");
    status(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    if Command::new("bpf-linker")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Ok(());
    }
    // The nightly toolchain ships libLLVM as lib/libLLVM.so.<version>-rust-<rustc version>;
    // bpf-linker's build looks for $LLVM_PREFIX/lib/libLLVM.so.
    let sysroot = PathBuf::from(
        output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]))?.trim(),
    );
    let lib = find_libllvm(&sysroot.join("lib"))?;
    let name = lib
        .file_name()
        .context("libLLVM path has a file name")?
        .to_string_lossy()
        .into_owned();
    let major =
        llvm_major(&name).with_context(|| format!("cannot tell the LLVM version of {name}"))?;
    let prefix = std::env::temp_dir().join(format!("observer-llvm-prefix-{major}"));
    std::fs::create_dir_all(prefix.join("lib"))?;
    for link in ["libLLVM.so".to_owned(), name.clone()] {
        let path = prefix.join("lib").join(&link);
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(&lib, &path)
            .with_context(|| format!("linking {}", path.display()))?;
    }
    eprintln!(
        "setup: building bpf-linker against the nightly toolchain's LLVM {major} ({name}); this takes about a minute"
    );
    status(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix),
    )
    .context("installing bpf-linker failed; see the cargo output above")
}

fn find_libllvm(dir: &Path) -> anyhow::Result<PathBuf> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with("libLLVM.so.") {
            return Ok(path);
        }
    }
    bail!(
        "no libLLVM.so.* in {}: is the nightly toolchain complete? (`rustup component list --toolchain nightly`)",
        dir.display()
    )
}

/// `libLLVM.so.22.1-rust-1.97.0-nightly` -> 22.
fn llvm_major(file_name: &str) -> Option<u32> {
    file_name
        .strip_prefix("libLLVM.so.")?
        .split(['.', '-'])
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn llvm_major_version_comes_from_the_file_name() {
        assert_eq!(
            super::llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly"),
            Some(22)
        );
        assert_eq!(
            super::llvm_major("libLLVM.so.19-rust-1.85.0-nightly"),
            Some(19)
        );
        assert_eq!(super::llvm_major("libLLVM-22.so"), None);
    }
}
