//! The kernel's own per-program counters, read with `BPF_OBJ_GET_INFO_BY_FD`.
//!
//! aya exposes run time and run count but not `recursion_misses`: the number of times the
//! kernel skipped the program because another tracing program was already running on that CPU.
//! Those are lost transitions, so they are read here.

use std::{io, os::fd::BorrowedFd};

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
