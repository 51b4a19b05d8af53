//! A socket's `struct sock_common`, copied into a record in one read: the fields a program
//! needs from it besides are then plain loads from the copy instead of a helper call each.

use observer_common::{probe_config::UNKNOWN, record::COMMON_CAPACITY};

use super::span;

/// The `T` at `offset` of the copy, when the `len` bytes copied hold it.
#[inline(always)]
pub fn field<T: Copy>(common: &[u8; COMMON_CAPACITY], len: usize, offset: u32) -> Option<T> {
    if offset == UNKNOWN {
        return None;
    }
    span::in_copy(common, len, offset as usize)
}

/// The inode number of the network namespace of `sk`, whose `struct sock_common` is copied
/// (`len` bytes): the `struct net` pointer from the copy, its inode in one read; both read
/// from the socket when the copy does not hold the pointer.
#[inline(always)]
pub unsafe fn netns_inum(
    sk: *const u8,
    common: &[u8; COMMON_CAPACITY],
    len: usize,
    net_offset: u32,
    inum_offset: u32,
) -> u32 {
    match field::<*const u8>(common, len, net_offset) {
        // SAFETY: a probe read of kernel memory.
        Some(net) => unsafe { span::net_inum(net, inum_offset) },
        // SAFETY: probe reads of kernel memory.
        None => unsafe { span::netns_inum(sk, net_offset, inum_offset) },
    }
}
