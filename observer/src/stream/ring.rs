//! One CPU's BPF ring buffer, read in place.
//!
//! The kernel reads the reader's position (the consumer page) at every reserve and every
//! submit of a record. Storing it after each record, as aya's `RingBuf` and libbpf do, takes
//! that cache line away from the producing CPU once per record while the reader drains; here
//! it is published once per drain, or as soon as a quarter of the ring has been read, so that
//! the space read is still handed back well before the ring could fill.

use std::{
    io,
    os::fd::{AsFd, AsRawFd as _, BorrowedFd, OwnedFd},
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
    /// The ring buffer map (a descriptor of its own: the map lives while one is open).
    fd: OwnedFd,
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
    pub fn new(map: &RingMap) -> io::Result<Self> {
        Self::map(
            map.map.fd().as_fd().try_clone_to_owned()?,
            map.bytes as usize,
        )
    }

    /// [`Ring::new`] of any descriptor laid out as the kernel lays out a ring buffer's pages.
    fn map(fd: OwnedFd, bytes: usize) -> io::Result<Self> {
        let page = page_size()?;
        if !bytes.is_power_of_two() || !bytes.is_multiple_of(page) {
            return Err(io::Error::other(format!(
                "a ring buffer of {bytes} bytes is not a power-of-two number of pages"
            )));
        }
        let consumer = Mapping::new(fd.as_fd(), page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::new(fd.as_fd(), page + 2 * bytes, libc::PROT_READ, page)?;
        let pos = consumer.position().load(Ordering::Acquire);
        Ok(Self {
            fd,
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
        self.fd.as_fd()
    }
}

fn page_size() -> io::Result<usize> {
    // SAFETY: a plain query.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .map_err(|_| io::Error::other("the page size is unknown"))
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

#[cfg(test)]
mod tests {
    use std::os::fd::FromRawFd as _;

    use super::*;

    /// The kernel's side of a ring, played on a memory file laid out as a ring buffer map's
    /// pages are: the consumer page, the producer page, then the data twice over (the kernel
    /// maps the same pages twice; here each byte is written to both copies).
    struct KernelSide {
        consumer_page: Mapping,
        producer_page: Mapping,
        /// The data pages, twice over.
        data: Mapping,
        bytes: usize,
        /// The producer position: where the next record will be reserved.
        at: usize,
    }

    /// A record reserved and not yet submitted.
    #[derive(Clone, Copy)]
    struct Reserved {
        at: usize,
        len: usize,
    }

    impl KernelSide {
        /// A ring of `pages` data pages and its reader.
        fn with_reader(pages: usize) -> (Self, Ring) {
            let page = page_size().expect("page size");
            let bytes = pages * page;
            // SAFETY: plain system calls on a new descriptor; results checked.
            let fd = unsafe {
                let fd = libc::memfd_create(c"ring".as_ptr(), libc::MFD_CLOEXEC);
                assert!(fd >= 0, "memfd_create: {}", io::Error::last_os_error());
                let fd = OwnedFd::from_raw_fd(fd);
                let len = libc::off_t::try_from(2 * page + 2 * bytes).expect("small");
                assert_eq!(libc::ftruncate(fd.as_raw_fd(), len), 0);
                fd
            };
            let map = |len, offset| {
                Mapping::new(fd.as_fd(), len, libc::PROT_READ | libc::PROT_WRITE, offset)
                    .expect("mapping the file")
            };
            let kernel = Self {
                consumer_page: map(page, 0),
                producer_page: map(page, page),
                data: map(2 * bytes, 2 * page),
                bytes,
                at: 0,
            };
            let ring = Ring::map(fd, bytes).expect("mapping the ring");
            (kernel, ring)
        }

        /// Writes `value` at ring position `at`, in both copies of the data.
        fn put(&mut self, at: usize, value: &[u8]) {
            for (i, &b) in value.iter().enumerate() {
                let offset = (at + i) & (self.bytes - 1);
                for copy in [0, self.bytes] {
                    // SAFETY: within the data's mapping, two copies of `bytes`.
                    unsafe { *self.data.ptr.as_ptr().add(copy + offset) = b };
                }
            }
        }

        /// Reserves a record of `len` bytes, as `bpf_ringbuf_reserve` does: its header
        /// busy, then the producer position moved past it.
        fn reserve(&mut self, len: usize) -> Reserved {
            let r = Reserved { at: self.at, len };
            let size = (HEADER + len).next_multiple_of(8);
            assert!(
                self.at + size - self.consumer() <= self.bytes,
                "the kernel reserves no more than the reader has handed back"
            );
            self.put(
                r.at,
                &(u32::try_from(len).expect("small") | BUSY).to_ne_bytes(),
            );
            self.at += size;
            self.producer_page
                .position()
                .store(self.at, Ordering::Release);
            r
        }

        /// Writes the record's bytes, then clears its busy bit (`bpf_ringbuf_submit`).
        fn submit(&mut self, r: Reserved, bytes: &[u8]) {
            assert_eq!(bytes.len(), r.len);
            self.put(r.at + HEADER, bytes);
            self.put(r.at, &u32::try_from(r.len).expect("small").to_ne_bytes());
        }

        /// Marks the record discarded (`bpf_ringbuf_discard`).
        fn discard(&mut self, r: Reserved) {
            self.put(
                r.at,
                &(u32::try_from(r.len).expect("small") | DISCARD).to_ne_bytes(),
            );
        }

        /// The position the reader last handed back.
        fn consumer(&self) -> usize {
            self.consumer_page.position().load(Ordering::Acquire)
        }

        fn write(&mut self, bytes: &[u8]) {
            let r = self.reserve(bytes.len());
            self.submit(r, bytes);
        }
    }

    /// The bytes of record `n`, `len` long: different in every record and at every offset.
    fn record(n: usize, len: usize) -> Vec<u8> {
        #[expect(clippy::cast_possible_truncation, reason = "a byte pattern")]
        (0..len).map(|i| (n * 31 + i) as u8).collect()
    }

    /// Takes every record the reader gives now.
    fn read_all(ring: &mut Ring) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(r) = ring.head() {
            out.push(r.to_vec());
            ring.take();
        }
        out
    }

    #[test]
    fn records_are_read_in_order_with_their_exact_bytes() {
        let (mut kernel, mut ring) = KernelSide::with_reader(1);
        let records: Vec<_> = [1, 13, 64, 8, 0]
            .into_iter()
            .enumerate()
            .map(|(n, len)| record(n, len))
            .collect();
        for r in &records {
            kernel.write(r);
        }
        assert_eq!(read_all(&mut ring), records);
        assert_eq!(ring.head(), None);
    }

    #[test]
    fn a_record_not_yet_submitted_holds_back_those_after_it() {
        let (mut kernel, mut ring) = KernelSide::with_reader(1);
        let (a, b) = (kernel.reserve(16), kernel.reserve(24));
        kernel.submit(b, &record(1, 24));
        assert_eq!(ring.head(), None);
        kernel.submit(a, &record(0, 16));
        assert_eq!(read_all(&mut ring), [record(0, 16), record(1, 24)]);
    }

    #[test]
    fn discarded_records_are_passed_over() {
        let (mut kernel, mut ring) = KernelSide::with_reader(1);
        let (a, b, c) = (kernel.reserve(8), kernel.reserve(40), kernel.reserve(8));
        kernel.discard(b);
        kernel.submit(c, &record(2, 8));
        kernel.submit(a, &record(0, 8));
        assert_eq!(read_all(&mut ring), [record(0, 8), record(2, 8)]);
        ring.publish();
        assert_eq!(
            kernel.consumer(),
            kernel.at,
            "the discarded record's space is back"
        );
    }

    #[test]
    fn the_head_stays_until_taken() {
        let (mut kernel, mut ring) = KernelSide::with_reader(1);
        kernel.write(&record(0, 8));
        kernel.write(&record(1, 8));
        assert_eq!(ring.head(), Some(&record(0, 8)[..]));
        assert_eq!(ring.head(), Some(&record(0, 8)[..]));
        ring.take();
        assert_eq!(ring.head(), Some(&record(1, 8)[..]));
    }

    #[test]
    fn space_goes_back_at_a_publish_or_once_a_quarter_of_the_ring_is_read() {
        let (mut kernel, mut ring) = KernelSide::with_reader(1);
        let quarter = kernel.bytes / 4;
        // Records of 64 bytes with their headers.
        for n in 0..3 {
            kernel.write(&record(n, 56));
        }
        assert_eq!(read_all(&mut ring).len(), 3);
        assert_eq!(
            kernel.consumer(),
            0,
            "nothing handed back before the drain ends"
        );
        ring.publish();
        assert_eq!(kernel.consumer(), 3 * 64);
        let (from, records) = (kernel.consumer(), quarter / 64);
        for n in 0..records {
            kernel.write(&record(n, 56));
        }
        for n in 0..records {
            assert_eq!(kernel.consumer(), from, "handed back early, at record {n}");
            assert!(ring.head().is_some());
            ring.take();
        }
        assert_eq!(
            kernel.consumer(),
            from + quarter,
            "a quarter read is handed back"
        );
    }

    #[test]
    fn records_across_the_end_of_the_ring_are_read_whole() {
        let (mut kernel, mut ring) = KernelSide::with_reader(1);
        let (mut written, mut read) = (0, Vec::new());
        // Lengths that leave records at every alignment, and some across the end; about 25
        // times around the ring.
        let len = |n: usize| (n * 37) % 200;
        while written < 1_000 {
            // At most a few records ahead of the reader, as space allows.
            for _ in 0..5 {
                let size = (HEADER + len(written)).next_multiple_of(8);
                if kernel.at + size - kernel.consumer() > kernel.bytes {
                    break;
                }
                kernel.write(&record(written, len(written)));
                written += 1;
            }
            read.extend(read_all(&mut ring));
            ring.publish();
        }
        assert!(
            kernel.at > 20 * kernel.bytes,
            "went around the ring many times"
        );
        assert_eq!(read.len(), written);
        for (n, r) in read.iter().enumerate() {
            assert_eq!(*r, record(n, len(n)), "record {n}");
        }
    }
}
