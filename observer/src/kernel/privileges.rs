//! What the process may do: capabilities and kernel version, checked before loading so that
//! the user gets a sentence saying what to do rather than a bare EPERM.

use thiserror::Error;

pub(crate) const CAP_SYS_ADMIN: u32 = 21;
pub(crate) const CAP_PERFMON: u32 = 38;
pub(crate) const CAP_BPF: u32 = 39;

#[derive(Debug, Error)]
pub enum PrivilegeError {
    #[error(
        "missing privileges: loading eBPF programs needs CAP_BPF and CAP_PERFMON (or \
         CAP_SYS_ADMIN), and this process has {have}. Run it as root (`sudo observer ...`), or \
         grant the binary the capabilities it uses: `sudo setcap \
         cap_bpf,cap_perfmon,cap_sys_admin,cap_syslog,cap_sys_ptrace,cap_dac_read_search+ep \
         $(command -v observer)` (`observer doctor` says what each one is for)"
    )]
    MissingCapabilities { have: String },
    #[error(
        "this kernel ({release}) has no BPF ring buffer, which needs Linux 5.8 or newer; upgrade \
         the kernel"
    )]
    RingBufUnsupported { release: String },
}

/// Effective capability bits of this process, from /proc/self/status.
pub(crate) fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// Fails unless the process can load and attach tracepoint programs.
pub fn check_capabilities() -> Result<(), PrivilegeError> {
    // Without /proc we cannot tell; let the kernel decide.
    let Some(caps) = effective_capabilities() else {
        return Ok(());
    };
    let admin = has(caps, CAP_SYS_ADMIN);
    if admin || (has(caps, CAP_BPF) && has(caps, CAP_PERFMON)) {
        return Ok(());
    }
    let named: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(c, _)| has(caps, *c))
        .map(|(_, n)| n)
        .collect();
    let have = if named.is_empty() {
        "neither".to_owned()
    } else {
        format!("only {}", named.join(", "))
    };
    Err(PrivilegeError::MissingCapabilities { have })
}

/// Fails on kernels older than 5.8, which have no BPF ring buffer.
pub fn check_ring_buffer_support() -> Result<(), PrivilegeError> {
    let Ok(version) = aya::util::KernelVersion::current() else {
        return Ok(());
    };
    if version < aya::util::KernelVersion::new(5, 8, 0) {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| format!("{version:?}"), |s| s.trim().to_owned());
        return Err(PrivilegeError::RingBufUnsupported { release });
    }
    Ok(())
}

/// Whether this process is privileged enough for the probes; tests use it to decide whether to
/// run or to skip loudly.
#[must_use]
pub fn can_load_probes() -> bool {
    check_capabilities().is_ok()
}
