//! One CPU's BPF ring buffer, read in place.
//!
//! The kernel reads the reader's position (the consumer page) at every reserve and every
//! submit of a record. Storing it after each record, as aya's `RingBuf` and libbpf do, takes
//! that cache line away from the producing CPU once per record while the reader drains; here
//! it is published once per drain, or as soon as a quarter of the ring has been read, so that
//! the space read is still handed back well before the ring could fill.

use std::{
    io,
    os::fd::{AsFd, AsRawFd as _, BorrowedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicUsize, Ordering},
};

use crate::load::RingMap;

/// The record's header bits (`BPF_RINGBUF_BUSY_BIT`, `BPF_RINGBUF_DISCARD_BIT`).
const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
/// `BPF_RINGBUF_HDR_SZ`: a record's length (with the bits above) and its page offset.
const HEADER: usize = 8;

/// One CPU's ring: its records are read where the kernel wrote them.
pub struct Ring {
    map: RingMap,
    /// The consumer page, read and written.
    consumer: Mapping,
    /// The producer page, then the data pages twice over (a record that wraps around the
    /// end reads on into the second copy), read only.
    producer: Mapping,
    /// Where the data pages start in `producer`: after its page.
    data: usize,
    mask: usize,
    /// Where the next unread record starts.
    pos: usize,
    /// Where the record [`Ring::head`] last gave ends.
    head_end: usize,
    /// The position last stored in the consumer page.
    published: usize,
    /// The producer position as last read: records up to it are reserved.
    reserved: usize,
    /// Bytes read past which the position is published within a drain.
    publish_every: usize,
}

impl Ring {
    /// Maps `map`, a ring buffer of `map.bytes` bytes (a power of two, a multiple of the page
    /// size), and starts reading where its reader left it.
    pub fn new(map: RingMap) -> io::Result<Self> {
        // SAFETY: a plain query.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| io::Error::other("the page size is unknown"))?;
        let bytes = map.bytes as usize;
        if !bytes.is_power_of_two() || !bytes.is_multiple_of(page) {
            return Err(io::Error::other(format!(
                "a ring buffer of {bytes} bytes is not a power-of-two number of pages"
            )));
        }
        let fd = map.map.fd().as_fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::new(fd, page + 2 * bytes, libc::PROT_READ, page)?;
        let pos = consumer.position().load(Ordering::Acquire);
        Ok(Self {
            map,
            consumer,
            producer,
            data: page,
            mask: bytes - 1,
            pos,
            head_end: pos,
            published: pos,
            reserved: pos,
            publish_every: bytes / 4,
        })
    }

    /// The next unread record, left unread (see [`Ring::take`]); `None` when the ring is empty
    /// or its next record is not yet submitted.
    pub fn head(&mut self) -> Option<&[u8]> {
        loop {
            if self.pos == self.reserved {
                self.reserved = self.producer.position().load(Ordering::Acquire);
                if self.pos == self.reserved {
                    return None;
                }
            }
            let at = self.data + (self.pos & self.mask);
            // Pairs with the kernel's xchg that clears the busy bit: the record's bytes are
            // written before.
            let header = self.producer.word(at).load(Ordering::Acquire);
            if header & BUSY != 0 {
                return None;
            }
            let len = (header & !(BUSY | DISCARD)) as usize;
            let end = self.pos + (HEADER + len).next_multiple_of(8);
            if header & DISCARD != 0 {
                self.pos = end;
                self.head_end = end;
                continue;
            }
            self.head_end = end;
            // The kernel never reserves more than the ring holds; a length past the mapping
            // would mean a corrupt ring, and reads as an empty one rather than out of bounds.
            return self.producer.bytes(at + HEADER, len);
        }
    }

    /// Marks the record [`Ring::head`] gave as read; its space goes back to the kernel at the
    /// next [`Ring::publish`], or now if a quarter of the ring waits for it.
    pub fn take(&mut self) {
        self.pos = self.head_end;
        if self.pos.wrapping_sub(self.published) >= self.publish_every {
            self.publish();
        }
    }

    /// Hands the space of every record read back to the kernel.
    pub fn publish(&mut self) {
        if self.pos != self.published {
            // Pairs with the kernel's acquire load before it reuses the space.
            self.consumer.position().store(self.pos, Ordering::Release);
            self.published = self.pos;
        }
    }
}

impl AsFd for Ring {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.map.map.fd().as_fd()
    }
}

/// A shared mapping of a ring buffer's pages, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by one `Ring`, and reached only through it.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(fd: BorrowedFd<'_>, len: usize, prot: libc::c_int, offset: usize) -> io::Result<Self> {
        let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        // SAFETY: a new shared mapping of an open descriptor; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Self { ptr, len })
    }

    /// The position word that starts the mapping (the consumer's or the producer's), which
    /// the kernel reads and writes atomically.
    #[expect(clippy::cast_ptr_alignment, reason = "a mapping starts on a page")]
    fn position(&self) -> &AtomicUsize {
        // SAFETY: a mapping is page-aligned and at least a page long; the kernel accesses the
        // word only atomically.
        unsafe { &*self.ptr.as_ptr().cast::<AtomicUsize>() }
    }

    /// A record header at `at`, which the kernel writes atomically.
    #[expect(clippy::cast_ptr_alignment, reason = "alignment checked")]
    fn word(&self, at: usize) -> &AtomicU32 {
        assert!(at + 4 <= self.len && at.is_multiple_of(4));
        // SAFETY: in bounds and aligned (checked); the kernel commits it with an atomic xchg.
        unsafe { &*self.ptr.as_ptr().add(at).cast::<AtomicU32>() }
    }

    /// `len` bytes at `at`, or `None` past the mapping.
    fn bytes(&self, at: usize, len: usize) -> Option<&[u8]> {
        if at.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: in bounds (checked). A submitted record's bytes do not change until the
        // reader hands its space back, which needs `&mut Ring` while this borrow holds it.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(at), len) })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
