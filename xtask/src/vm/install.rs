//! What booting a guest needs, installed once and reused: qemu, busybox and depmod from
//! Debian, virtme-ng from PyPI in a venv under target/vm/, and Debian's kernel packages
//! unpacked under target/vm/kernels/.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use super::Series;
use crate::run_command as run;

/// Debian packages and a file each installs: qemu runs the guest, virtme-ng's initramfs is
/// built from busybox, and depmod indexes the unpacked kernel's modules.
const DEBIAN_PACKAGES: [(&str, &str); 3] = [
    ("qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
    ("busybox-static", "/bin/busybox"),
    ("kmod", "/sbin/depmod"),
];

/// Pinned: its command line and its script-fallback console are what the runner relies on.
const VIRTME_NG: &str = "virtme-ng==1.42";

/// A kernel unpacked from Debian's package.
pub struct KernelImage {
    /// `uname -r` of the guest, e.g. `6.1.0-48-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
}

pub fn debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(_, file)| !Path::new(file).exists())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::is_root() {
        bail!(
            "{} missing; install them as root (`sudo apt-get install {}`)",
            missing.join(", "),
            missing.join(" ")
        );
    }
    eprintln!(
        "vm: installing {} with apt-get (to boot kernels in virtual machines)",
        missing.join(", ")
    );
    if !crate::setup::apt_get_install(&missing) {
        bail!(
            "apt-get install {} failed; see its output above",
            missing.join(" ")
        );
    }
    Ok(())
}

/// The venv's `bin` directory, with `vng` in it.
pub fn virtme_ng(vm_dir: &Path) -> anyhow::Result<PathBuf> {
    let venv = vm_dir.join("venv");
    let bin = venv.join("bin");
    let pinned = venv.join(".installed");
    if std::fs::read_to_string(&pinned).is_ok_and(|v| v == VIRTME_NG) && bin.join("vng").exists() {
        return Ok(bin);
    }
    eprintln!(
        "vm: installing {VIRTME_NG} from PyPI into {}",
        venv.display()
    );
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(bin.join("pip"))
        .args(["install", "--quiet", VIRTME_NG])
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1"))?;
    std::fs::write(&pinned, VIRTME_NG)?;
    Ok(bin)
}

/// The newest Debian kernel of `series`, downloaded and unpacked once, its modules indexed and
/// visible at /lib/modules/RELEASE (virtme-ng's guest loads 9p and the rest from there).
pub fn kernel(vm_dir: &Path, series: Series) -> anyhow::Result<KernelImage> {
    let dir = vm_dir.join("kernels").join(series.name());
    let chosen = dir.join("package");
    let package = match std::fs::read_to_string(&chosen) {
        Ok(name) if dir.join("root").exists() => name.trim().to_owned(),
        _ => {
            let package = newest_package(series)?;
            unpack(&dir, &package)?;
            std::fs::write(&chosen, &package)?;
            package
        }
    };
    let root = dir.join("root");
    let release = package
        .strip_prefix("linux-image-")
        .with_context(|| format!("{package} is not a kernel image package"))?
        .to_owned();
    let modules = root.join("lib/modules").join(&release);
    if !modules.join("modules.dep").exists() {
        eprintln!("vm: indexing the modules of {release} (depmod)");
        run(Command::new("depmod").arg("-b").arg(&root).arg(&release))?;
    }
    link_modules(&modules, &release)?;
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.exists() {
        bail!("{} is missing from {package}", vmlinuz.display());
    }
    Ok(KernelImage { release, vmlinuz })
}

/// The highest-numbered `linux-image-*` package of the series that apt knows, after
/// `apt-get update` when it knows none.
fn newest_package(series: Series) -> anyhow::Result<String> {
    let search = || -> anyhow::Result<Option<String>> {
        let out = crate::setup::output_bytes(
            Command::new("apt-cache").args(["pkgnames", "linux-image-"]),
        )?;
        let names = String::from_utf8_lossy(&out);
        Ok(names
            .lines()
            .filter_map(|name| series.package_rank(name).map(|rank| (rank, name)))
            .max()
            .map(|(_, name)| name.to_owned()))
    };
    if let Some(name) = search()? {
        return Ok(name);
    }
    eprintln!(
        "vm: no {} kernel package known; apt-get update",
        series.name()
    );
    run(Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    search()?.with_context(|| format!("Debian's registry offers no {} kernel", series.name()))
}

fn unpack(dir: &Path, package: &str) -> anyhow::Result<()> {
    eprintln!(
        "vm: downloading and unpacking {package} into {}",
        dir.display()
    );
    let download = dir.join("download");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(&download)?;
    run(Command::new("apt-get")
        .args(["download", package])
        .current_dir(&download))?;
    let deb = std::fs::read_dir(&download)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {package} left no .deb"))?;
    // Unpacked into a scratch directory first, so that an interrupted run is not taken for a
    // finished one.
    let scratch = dir.join("root.partial");
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&scratch))?;
    std::fs::rename(&scratch, dir.join("root"))?;
    std::fs::remove_file(&deb)?;
    Ok(())
}

/// /lib/modules/RELEASE -> the unpacked modules, unless that path is already something else
/// (an installed kernel of the same release).
fn link_modules(modules: &Path, release: &str) -> anyhow::Result<()> {
    let link = Path::new("/lib/modules").join(release);
    match std::fs::read_link(&link) {
        Ok(target) if target == modules => return Ok(()),
        Ok(_) => std::fs::remove_file(&link)?,
        Err(_) if link.exists() => return Ok(()),
        Err(_) => {}
    }
    std::fs::create_dir_all("/lib/modules")?;
    std::os::unix::fs::symlink(modules, &link)
        .with_context(|| format!("linking {} (needs root)", link.display()))
}
