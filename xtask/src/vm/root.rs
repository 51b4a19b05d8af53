//! A Debian bookworm system for the service test: a root made once with debootstrap, an ext4
//! disk image of it with one kernel's modules (both cached under target/vm/service/, keyed by
//! what they are made of), and a small initramfs that loads the disk's drivers and hands over
//! to systemd.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use std::{fmt::Write as _, io::Write as _};

use anyhow::{Context as _, bail};

use super::install::KernelImage;
use crate::run_command as run;

const SUITE: &str = "bookworm";

/// What the root holds beyond debootstrap's minimal base: systemd as init and its user database
/// for dynamic users, udev for the devices systemd waits on, kmod (the kernel loads tcp_diag
/// through modprobe when the daemon first asks sock_diag for sockets), and what the checks run
/// (ss, ps, curl, python3 for the leaking server).
const PACKAGES: &[&str] = &[
    "systemd",
    "kmod",
    "systemd-sysv",
    "udev",
    "dbus",
    "libnss-systemd",
    "iproute2",
    "procps",
    "curl",
    "python3-minimal",
];

/// Bumped whenever what is written into the root after debootstrap changes.
const LAYOUT: u32 = 2;

/// Started by systemd once the system is up: unpacks the disk the host hands in (serial
/// observer-in, a tar archive) and runs its start.sh, which writes the results disk and powers
/// off. Baked into the root so that changing the checks needs no new image.
const START: &str = r#"#!/bin/sh
# Runs the checks the host handed in on the disk with serial observer-in.
set -u
for b in /sys/block/vd*; do
    [ "$(cat "$b/serial" 2>/dev/null)" = observer-in ] && disk=/dev/${b##*/}
done
mkdir -p /run/observer-vm
if [ -z "${disk:-}" ] || ! tar -xf "$disk" -C /run/observer-vm; then
    echo "check: no input disk (serial observer-in)"
    systemctl poweroff --no-block
    exit 1
fi
exec /bin/sh /run/observer-vm/start.sh
"#;

const CHECK_UNIT: &str = "\
[Unit]
Description=observer service checks
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/observer-vm-start
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity
";

/// Booted instead of the default target (kernel command line `systemd.unit=`): the whole
/// system first, then the checks. A target of its own because multi-user.target would order
/// itself after a unit it wants.
const CHECK_TARGET: &str = "\
[Unit]
Description=observer service checks after a full boot
Requires=multi-user.target observer-vm-check.service
After=multi-user.target
AllowIsolate=yes
";

/// Modules the initramfs loads before it can mount the root disk; their dependencies come from
/// modules.dep.
const BOOT_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "crc32c_generic", "ext4"];

/// Free space on the guest's root disk, for the package, the journal and apt's work. The image
/// is sparse and the guest writes to a throw-away overlay (qemu's snapshot mode).
const IMAGE_BYTES: u64 = 3 << 30;

/// The cached root directory, made with debootstrap when missing or made of other packages.
pub fn debian_root(service_dir: &Path) -> anyhow::Result<PathBuf> {
    let root = service_dir.join("bookworm-root");
    let key = root_key();
    let key_file = service_dir.join("bookworm-root.key");
    if root.is_dir() && fs::read_to_string(&key_file).is_ok_and(|k| k == key) {
        return Ok(root);
    }
    if !Path::new("/usr/sbin/debootstrap").exists() {
        eprintln!("vm: installing debootstrap with apt-get (to build the service test's root)");
        if !crate::setup::apt_get_install(&["debootstrap"]) {
            bail!("apt-get install debootstrap failed; see its output above");
        }
    }
    let mirror = host_mirror()?;
    eprintln!(
        "vm: building a Debian {SUITE} root with systemd in {} (debootstrap from {mirror}, a \
         few minutes, once)",
        root.display()
    );
    // Built beside the cache and renamed, so that an interrupted build is never taken for one
    // that finished.
    let partial = service_dir.join("bookworm-root.partial");
    let _ = fs::remove_dir_all(&partial);
    let _ = fs::remove_file(&key_file);
    fs::create_dir_all(service_dir)?;
    run(Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={}", PACKAGES.join(",")),
            SUITE,
        ])
        .arg(&partial)
        .arg(&mirror))?;
    customize(&partial)?;
    let _ = fs::remove_dir_all(&root);
    fs::rename(&partial, &root)?;
    fs::write(&key_file, key)?;
    Ok(root)
}

fn root_key() -> String {
    format!("{SUITE} minbase {} layout {LAYOUT}", PACKAGES.join(","))
}

/// What the root needs beyond its packages: a name, and the unit that runs the checks.
fn customize(root: &Path) -> anyhow::Result<()> {
    fs::write(root.join("etc/hostname"), "observer-vm\n")?;
    let start = root.join("usr/local/sbin/observer-vm-start");
    fs::create_dir_all(start.parent().context("has a parent")?)?;
    fs::write(&start, START)?;
    fs::set_permissions(&start, fs::Permissions::from_mode(0o755))?;
    let units = root.join("etc/systemd/system");
    fs::write(units.join("observer-vm-check.service"), CHECK_UNIT)?;
    fs::write(units.join("observer-vm.target"), CHECK_TARGET)?;
    // Downloaded package files are not needed again; the image stays smaller.
    let _ = Command::new("chroot")
        .arg(root)
        .args(["apt-get", "clean"])
        .status();
    // Nor the package lists: installing a local .deb whose dependencies are installed needs
    // none, and parsing bookworm's list costs apt-get about half a minute per run on an
    // emulated CPU.
    for entry in fs::read_dir(root.join("var/lib/apt/lists"))?.filter_map(Result::ok) {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// The Debian mirror this host's apt uses for bookworm's main component (a proxy or local
/// mirror when the host has one), from /etc/apt/sources.list and sources.list.d.
fn host_mirror() -> anyhow::Result<String> {
    let mut texts = Vec::new();
    for file in ["/etc/apt/sources.list".into()].into_iter().chain(
        fs::read_dir("/etc/apt/sources.list.d")
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path()),
    ) {
        let file: PathBuf = file;
        if let Ok(text) = fs::read_to_string(&file) {
            let deb822 = file.extension().is_some_and(|e| e == "sources");
            texts.push((deb822, text));
        }
    }
    texts
        .iter()
        .find_map(|(deb822, text)| mirror_in(text, *deb822))
        .with_context(|| {
            format!(
                "no apt source on this host serves Debian {SUITE} main (looked in \
                 /etc/apt/sources.list and /etc/apt/sources.list.d); add one, e.g. `deb \
                 http://deb.debian.org/debian {SUITE} main`"
            )
        })
}

/// The URI of the first source in `text` (one-line or deb822 format) that offers `deb`
/// packages of bookworm's main component.
fn mirror_in(text: &str, deb822: bool) -> Option<String> {
    if !deb822 {
        return text.lines().find_map(|line| {
            let line = line.split('#').next().unwrap_or_default();
            let mut words = line.split_whitespace();
            if words.next() != Some("deb") {
                return None;
            }
            // An options block such as [arch=amd64 signed-by=...] may follow "deb".
            let mut words = words.skip_while(|w| !w.contains("://") || w.starts_with('['));
            let uri = words.next()?;
            let suite = words.next()?;
            (suite == SUITE && words.any(|c| c == "main")).then(|| uri.to_owned())
        });
    }
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        };
        let has = |name: &str, word: &str| {
            field(name).is_some_and(|v| v.split_whitespace().any(|w| w == word))
        };
        let enabled = field("Enabled").is_none_or(|v| v != "no");
        (enabled && has("Types", "deb") && has("Suites", SUITE) && has("Components", "main"))
            .then(|| field("URIs"))
            .flatten()
            .and_then(|uris| uris.split_whitespace().next().map(str::to_owned))
    })
}

/// The root disk: the cached root plus `kernel`'s modules (the daemon's sock_diag requests load
/// inet_diag and tcp_diag), as a sparse ext4 image made without mounting anything.
pub fn disk_image(
    service_dir: &Path,
    root: &Path,
    kernel: &KernelImage,
    modules: &Path,
) -> anyhow::Result<PathBuf> {
    let image = service_dir.join(format!("root-{}.img", kernel.release));
    let key = format!("{} modules {}", root_key(), kernel.release);
    let key_file = image.with_extension("img.key");
    if image.exists() && fs::read_to_string(&key_file).is_ok_and(|k| k == key) {
        return Ok(image);
    }
    eprintln!("vm: making the guest's root disk {}", image.display());
    // A tree of hard links (no copying) holding root and modules, for mkfs.ext4 -d.
    let stage = service_dir.join("image-stage");
    let _ = fs::remove_dir_all(&stage);
    run(Command::new("cp").arg("-al").arg(root).arg(&stage))?;
    // bookworm's /lib is a link to usr/lib.
    let target = stage.join("usr/lib/modules");
    fs::create_dir_all(&target)?;
    run(Command::new("cp")
        .arg("-al")
        .arg(modules)
        .arg(target.join(&kernel.release)))?;
    let partial = image.with_extension("img.partial");
    let _ = fs::remove_file(&key_file);
    let _ = fs::remove_file(&partial);
    // A sparse file of the full size: mkfs.ext4 takes its size from it.
    fs::File::create(&partial)?.set_len(IMAGE_BYTES)?;
    let made = run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "observer-root", "-d"])
        .arg(&stage)
        .arg(&partial));
    fs::remove_dir_all(&stage)?;
    made?;
    fs::rename(&partial, &image)?;
    fs::write(&key_file, key)?;
    Ok(image)
}

/// The initramfs: busybox, the modules the root disk needs (in load order) and an /init that
/// loads them, mounts the disk and starts systemd on it as PID 1.
pub fn initramfs(out: &Path, modules: &Path) -> anyhow::Result<()> {
    let deps = fs::read_to_string(modules.join("modules.dep"))
        .with_context(|| format!("reading {}/modules.dep", modules.display()))?;
    let order = load_order(&deps, BOOT_MODULES)?;
    let mut archive = Cpio::default();
    archive.dir("bin");
    archive.dir("dev");
    archive.dir("proc");
    archive.dir("sys");
    archive.dir("newroot");
    archive.dir("modules");
    let busybox = fs::read("/bin/busybox").context("reading /bin/busybox (busybox-static)")?;
    archive.file("bin/busybox", 0o755, &busybox);
    let mut insmods = String::new();
    for path in &order {
        let name = Path::new(path)
            .file_name()
            .context("module path has a name")?
            .to_string_lossy()
            .into_owned();
        let data = fs::read(modules.join(path))
            .with_context(|| format!("reading {}", modules.join(path).display()))?;
        archive.file(&format!("modules/{name}"), 0o644, &data);
        // Writing to a String cannot fail.
        let _ = writeln!(insmods, "insmod /modules/{name} || fail \"insmod {name}\"");
    }
    let init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         export PATH=/bin\n\
         fail() {{ echo \"initramfs: $1 failed\"; poweroff -f; }}\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         {insmods}\
         n=0; while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done\n\
         mount -t ext4 -o rw /dev/vda /newroot || fail 'mounting /dev/vda'\n\
         umount /proc /sys\n\
         mount --move /dev /newroot/dev\n\
         exec switch_root /newroot /lib/systemd/systemd\n"
    );
    archive.file("init", 0o755, init.as_bytes());
    fs::write(out, archive.finish()).with_context(|| format!("writing {}", out.display()))
}

/// `wanted` modules and their dependencies from modules.dep, each after what it needs.
fn load_order(modules_dep: &str, wanted: &[&str]) -> anyhow::Result<Vec<String>> {
    let deps: Vec<(String, Vec<String>)> = modules_dep
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| {
            (
                m.trim().to_owned(),
                d.split_whitespace().map(str::to_owned).collect(),
            )
        })
        .collect();
    let find = |name: &str| {
        deps.iter().find(|(path, _)| {
            let file = path.rsplit('/').next().unwrap_or(path);
            // Compressed modules are .ko.xz/.ko.zst; names use _ where files may use -.
            let stem = file.split(".ko").next().unwrap_or(file);
            stem.replace('-', "_") == name
        })
    };
    let mut order = Vec::new();
    for name in wanted {
        let (path, needs) = find(name).with_context(|| {
            format!("module {name} is not in modules.dep (built into the kernel?)")
        })?;
        // modules.dep lists what a module needs with the most basic last.
        for m in needs.iter().rev().chain(std::iter::once(path)) {
            if !order.contains(m) {
                order.push(m.clone());
            }
        }
    }
    Ok(order)
}

/// A cpio archive in the "newc" format, the one the kernel unpacks as an initramfs.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, &[]);
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | mode, data);
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.inode += 1;
        let name_size = name.len() + 1;
        // magic, inode, mode, uid, gid, nlink, mtime, size, devmajor, devminor, rdevmajor,
        // rdevminor, name size, check: all 8 hex digits.
        let fields = [
            self.inode,
            mode,
            0,
            0,
            if mode & 0o040_000 != 0 { 2 } else { 1 },
            0,
            u32::try_from(data.len()).unwrap_or(u32::MAX),
            0,
            0,
            0,
            0,
            u32::try_from(name_size).unwrap_or(u32::MAX),
            0,
        ];
        let _ = write!(self.bytes, "070701");
        for f in fields {
            let _ = write!(self.bytes, "{f:08x}");
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_load_after_what_they_need() {
        let dep = "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n\
                   kernel/fs/jbd2/jbd2.ko:\n\
                   kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
                   kernel/crypto/crc32c_generic.ko.xz:\n";
        let order = load_order(dep, &["virtio_blk", "ext4", "crc32c_generic"]).unwrap();
        assert_eq!(
            order,
            [
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/block/virtio_blk.ko",
                "kernel/fs/jbd2/jbd2.ko",
                "kernel/fs/mbcache.ko",
                "kernel/lib/crc16.ko",
                "kernel/fs/ext4/ext4.ko",
                "kernel/crypto/crc32c_generic.ko.xz",
            ]
        );
        assert!(load_order(dep, &["9p"]).is_err());
    }

    #[test]
    fn the_mirror_comes_from_either_sources_format() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian-security\n\
                      Suites: bookworm-security\nComponents: main\n\n\
                      Types: deb deb-src\nURIs: http://mirror.example/debian\n\
                      Suites: bookworm bookworm-updates\nComponents: main contrib\n";
        assert_eq!(
            mirror_in(deb822, true).as_deref(),
            Some("http://mirror.example/debian")
        );
        let one_line = "# deb http://old.example/debian bookworm main\n\
                        deb-src http://src.example/debian bookworm main\n\
                        deb [arch=amd64] http://proxy.local:3142/debian bookworm main\n";
        assert_eq!(
            mirror_in(one_line, false).as_deref(),
            Some("http://proxy.local:3142/debian")
        );
        assert_eq!(
            mirror_in("deb https://x.example/apt cloud-sdk main\n", false),
            None
        );
    }

    #[test]
    fn cpio_entries_are_newc_and_aligned() {
        let mut c = Cpio::default();
        c.file("init", 0o755, b"#!/bin/sh\n");
        let bytes = c.finish();
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(bytes.len() % 4, 0);
        // Header (110 bytes), "init\0" padded to 116, 10 bytes of data padded to 128.
        assert_eq!(&bytes[110..115], b"init\0");
        assert_eq!(&bytes[116..126], b"#!/bin/sh\n");
        assert_eq!(&bytes[128..134], b"070701");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("TRAILER!!!"));
        // mode of the file: regular, 0755.
        assert_eq!(&bytes[14..22], b"000081ed");
    }
}
