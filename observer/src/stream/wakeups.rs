//! One descriptor that becomes readable when any CPU's ring wakes its reader: an epoll
//! instance holding every ring, itself watched by the runtime.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd, FromRawFd as _, OwnedFd, RawFd},
};

use super::Ring;

#[derive(Debug)]
pub struct Wakeups(OwnedFd);

impl Wakeups {
    /// Watches every ring in `rings`.
    pub fn of(rings: &[Ring]) -> io::Result<Self> {
        // SAFETY: a plain system call; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        let epoll = Self(unsafe { OwnedFd::from_raw_fd(fd) });
        for ring in rings {
            let ring_fd = ring.as_fd().as_raw_fd();
            // Its data is never read: any ring's wakeup means a read of them all.
            let mut event = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 0,
            };
            // SAFETY: both descriptors are open; the event is a valid pointer for the call.
            if unsafe { libc::epoll_ctl(fd, libc::EPOLL_CTL_ADD, ring_fd, &raw mut event) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(epoll)
    }
}

impl AsRawFd for Wakeups {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}
