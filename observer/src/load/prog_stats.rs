//! The kernel's own per-program counters, read with `BPF_OBJ_GET_INFO_BY_FD`.
//!
//! aya exposes run time and run count but not `recursion_misses`: the number of times the
//! kernel skipped the program because another tracing program was already running on that CPU.
//! Those are lost transitions, so they are read here.
//!
//! Run count and run time are kept only while BPF statistics are enabled ([`enable`]); the
//! benchmark and the tests read them for any process's programs ([`attached_by`]).

use std::{
    collections::BTreeMap,
    io,
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
};

use aya_obj::generated::bpf_prog_info;

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The `info` member of `union bpf_attr` (include/uapi/linux/bpf.h).
#[repr(C)]
struct InfoByFdAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// Counters of one loaded program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgStats {
    pub run_count: u64,
    pub run_time_ns: u64,
    pub recursion_misses: u64,
}

pub fn read(fd: BorrowedFd<'_>) -> io::Result<ProgStats> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: bpf_prog_info is plain old data.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoByFdAttr {
        bpf_fd: u32::try_from(fd.as_raw_fd())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        #[expect(clippy::cast_possible_truncation, reason = "a few hundred bytes")]
        info_len: size_of::<bpf_prog_info>() as u32,
        info: std::ptr::from_mut(&mut info) as u64,
    };
    // SAFETY: attr points at a valid, correctly sized buffer for the kernel to fill.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            std::ptr::from_mut(&mut attr),
            size_of::<InfoByFdAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ProgStats {
        run_count: info.run_cnt,
        run_time_ns: info.run_time_ns,
        recursion_misses: info.recursion_misses,
    })
}

/// Keeps BPF run statistics on while alive.
pub struct StatsEnabled(#[expect(dead_code, reason = "held for its drop")] OwnedFd);

/// Turns on run count and run time for every program. `BPF_ENABLE_STATS` does what `sysctl
/// kernel.bpf_stats_enabled=1` does, but the kernel turns it off again when the descriptor
/// closes, so the host's setting is restored even if the caller is killed.
pub fn enable() -> io::Result<StatsEnabled> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map(StatsEnabled)
        .map_err(|e| io::Error::other(format!("enabling BPF statistics: {e}")))
}

/// One program: its kernel name (at most 15 bytes) and counters.
#[derive(Clone, Debug)]
pub struct Program {
    pub name: String,
    pub stats: ProgStats,
}

/// The programs process `pid` has attached (those its BPF links hold; the programs it holds
/// when it has no links), by program id.
pub fn attached_by(pid: u32) -> io::Result<BTreeMap<u32, Program>> {
    let (mut linked, mut held) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let list = match target.to_string_lossy().as_ref() {
            "anon_inode:bpf_link" => &mut linked,
            "anon_inode:bpf-prog" => &mut held,
            _ => continue,
        };
        let fdinfo = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            entry.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        if let Some(id) = fdinfo
            .lines()
            .find_map(|l| l.strip_prefix("prog_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            list.push(id);
        }
    }
    let ids = if linked.is_empty() { held } else { linked };
    let mut programs = BTreeMap::new();
    for info in aya::programs::loaded_programs().filter_map(Result::ok) {
        if !ids.contains(&info.id()) {
            continue;
        }
        let Ok(fd) = info.fd() else { continue };
        let stats = read(fd.as_fd())?;
        let name = info.name_as_str().unwrap_or("?").to_owned();
        programs.insert(info.id(), Program { name, stats });
    }
    Ok(programs)
}
