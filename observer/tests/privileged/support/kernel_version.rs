//! The running kernel's version, for the few expectations that differ by kernel (each use says
//! why).

/// `major.minor` of the running kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
}

impl KernelVersion {
    /// The running kernel's, from /proc/sys/kernel/osrelease (`6.1.0-48-amd64` -> 6.1).
    #[must_use]
    pub fn running() -> Self {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut numbers = release
            .trim()
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse::<u32>().unwrap());
        Self {
            major: numbers.next().unwrap(),
            minor: numbers.next().unwrap(),
        }
    }

    #[must_use]
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        self >= Self { major, minor }
    }
}
