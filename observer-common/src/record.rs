//! Records written by the eBPF programs into the ring buffer.

/// Version of the record layout. Bumped whenever a record changes shape, so that a daemon never
/// misreads records from an object built for another layout.
pub const RECORD_VERSION: u16 = 1;

/// Bytes of the tracepoint record copied verbatim into a [`StateRecord`].
///
/// The eBPF side copies the span of the tracepoint record that holds the fields we decode; the
/// daemon decodes it with the offsets it read from tracefs, so a kernel that moves fields needs no
/// new eBPF object. 96 bytes leaves room for fields that newer kernels add to the 64 in use today.
pub const RAW_CAPACITY: usize = 96;

/// Record kinds. Discriminants are part of the wire format: never reuse one.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A `sock:inet_sock_set_state` transition of a TCP socket.
    StateChange = 1,
}

/// Fixed header at offset 0 of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RecordHeader {
    /// A [`RecordKind`] discriminant.
    pub kind: u16,
    /// [`RECORD_VERSION`] of the program that wrote the record.
    pub version: u16,
    /// `size_of` the whole record, checked by the decoder.
    pub size: u32,
}

/// One TCP state transition, as written by the `inet_sock_set_state` program.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StateRecord {
    pub header: RecordHeader,
    /// `bpf_ktime_get_ns()`: `CLOCK_MONOTONIC`, nanoseconds.
    pub ts_ns: u64,
    /// `bpf_get_current_pid_tgid()` of the task running when the transition happened.
    pub pid_tgid: u64,
    /// Inode number of the socket's network namespace; 0 when it could not be read.
    pub netns: u32,
    /// Bytes of `raw` filled from the tracepoint record.
    pub raw_len: u32,
    /// `bpf_get_current_comm()` of that task.
    pub comm: [u8; 16],
    /// The tracepoint record from `StateProbeConfig::span_start`, `raw_len` bytes.
    pub raw: [u8; RAW_CAPACITY],
}

const _: () = assert!(size_of::<RecordHeader>() == 8);
const _: () = assert!(size_of::<StateRecord>() == 48 + RAW_CAPACITY);
const _: () = assert!(size_of::<StateRecord>().is_multiple_of(8));

impl RecordHeader {
    #[must_use]
    pub const fn new(kind: RecordKind, size: usize) -> Self {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "records are a few hundred bytes"
        )]
        Self {
            kind: kind as u16,
            version: RECORD_VERSION,
            size: size as u32,
        }
    }
}

/// Indices into the per-CPU `COUNTERS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// `bpf_ringbuf_reserve` failed: the ring buffer was full and a transition was dropped.
    RingbufFull = 0,
    /// The tracepoint record could not be read (should never happen; counted, not hidden).
    ReadFailed = 1,
}

/// Number of slots in the `COUNTERS` map.
pub const COUNTER_SLOTS: u32 = 2;
