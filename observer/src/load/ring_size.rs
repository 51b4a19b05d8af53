//! The ring buffer's size, as the flag and the configuration file give it: a power of two, or
//! `auto` (sized from what this host can burst). Parsed and checked here only.

use std::{fmt, str::FromStr};

/// Bytes of the ring buffer: a power of two from [`RingBufferSize::MIN`] to
/// [`RingBufferSize::MAX`], or sized from this host's `net.ipv4.tcp_max_tw_buckets`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RingBufferSize {
    /// Enough for the expiry burst of as many timewait sockets as the host keeps, at least
    /// [`RingBufferSize::AUTO_MIN`], at most [`RingBufferSize::AUTO_MAX`].
    #[default]
    Auto,
    Bytes(u32),
}

/// Ring-buffer bytes one timewait socket's end takes when its timer expires: a cancel and an
/// expiry record of 40 bytes, each behind the ring's 8-byte header.
pub const BYTES_PER_TIMEWAIT_END: u64 = 2 * (40 + 8);

impl RingBufferSize {
    pub const MIN: u32 = 4 << 10;
    /// Every byte is locked kernel memory, mapped twice into the reader.
    pub const MAX: u32 = 256 << 20;
    pub const AUTO_MIN: u32 = 4 << 20;
    pub const AUTO_MAX: u32 = 64 << 20;

    /// Checks a size in bytes.
    pub fn bytes(bytes: u64) -> Result<Self, String> {
        let shown = format_size(bytes);
        if !(u64::from(Self::MIN)..=u64::from(Self::MAX)).contains(&bytes) {
            return Err(format!(
                "invalid size {shown}: must be a power of two from 4K to 256M, such as \"16M\" \
                 (or \"auto\"); each byte is locked kernel memory"
            ));
        }
        if !bytes.is_power_of_two() {
            // The kernel requires a power of two; offer the two nearest.
            let below = 1 << bytes.ilog2();
            return Err(format!(
                "invalid size {shown}: must be a power of two, such as \"{}\" or \"{}\"",
                format_size(below),
                format_size(below * 2)
            ));
        }
        Ok(Self::Bytes(u32::try_from(bytes).expect("at most 256M")))
    }

    /// Checks a size in bytes given as a signed integer (as TOML integers are).
    pub fn signed_bytes(bytes: i64) -> Result<Self, String> {
        let bytes = u64::try_from(bytes).map_err(|_| {
            format!(
                "invalid size {bytes}: must be a power of two from 4K to 256M, such as \"16M\" \
                 (or \"auto\")"
            )
        })?;
        Self::bytes(bytes)
    }

    /// The size in bytes. `Auto` holds the expiry burst of `max_tw_buckets` timewait sockets
    /// (all of them armed within one timer-wheel bucket), with a quarter more for what else
    /// arrives meanwhile.
    #[must_use]
    pub fn resolve(self, max_tw_buckets: Option<u64>) -> u32 {
        match self {
            Self::Bytes(n) => n,
            Self::Auto => {
                let burst = max_tw_buckets.unwrap_or(0) * BYTES_PER_TIMEWAIT_END * 5 / 4;
                let bytes = burst
                    .clamp(u64::from(Self::AUTO_MIN), u64::from(Self::AUTO_MAX))
                    .next_power_of_two()
                    .min(u64::from(Self::AUTO_MAX));
                u32::try_from(bytes).expect("at most 64M")
            }
        }
    }

    /// How many timewait sockets' ends `bytes` of ring holds at once.
    #[must_use]
    pub const fn timewait_burst(bytes: u32) -> u64 {
        bytes as u64 / BYTES_PER_TIMEWAIT_END
    }
}

impl FromStr for RingBufferSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        let bytes = parse_size(text).ok_or_else(|| {
            format!(
                "invalid size {text:?}: expected \"auto\", bytes, or a number with K, M or G \
                 (powers of 1024), such as \"16M\""
            )
        })?;
        Self::bytes(bytes)
    }
}

impl fmt::Display for RingBufferSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Bytes(n) => f.write_str(&format_size(u64::from(*n))),
        }
    }
}

/// Bytes, or a number with K, M or G (powers of 1024).
fn parse_size(text: &str) -> Option<u64> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KI" | "KIB" => 10,
        "M" | "MI" | "MIB" => 20,
        "G" | "GI" | "GIB" => 30,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// "4M", "256K", or plain bytes.
#[must_use]
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_are_checked() {
        assert_eq!("auto".parse(), Ok(RingBufferSize::Auto));
        assert_eq!("4M".parse(), Ok(RingBufferSize::Bytes(4 << 20)));
        assert_eq!("256KiB".parse(), Ok(RingBufferSize::Bytes(256 << 10)));
        assert_eq!("4096".parse(), Ok(RingBufferSize::Bytes(4096)));
        assert_eq!(
            "3M".parse::<RingBufferSize>(),
            Err("invalid size 3M: must be a power of two, such as \"2M\" or \"4M\"".into())
        );
        let huge = "1G".parse::<RingBufferSize>().unwrap_err();
        assert!(huge.contains("from 4K to 256M"), "{huge}");
        assert!("2K".parse::<RingBufferSize>().is_err());
        assert!(
            "4MB"
                .parse::<RingBufferSize>()
                .unwrap_err()
                .contains("expected \"auto\"")
        );
        assert_eq!(RingBufferSize::Bytes(16 << 20).to_string(), "16M");
    }

    #[test]
    fn auto_holds_the_expiry_burst_of_every_timewait_socket() {
        let auto = RingBufferSize::Auto;
        assert_eq!(auto.resolve(None), 4 << 20);
        assert_eq!(auto.resolve(Some(4096)), 4 << 20, "at least 4M");
        // This machine's default: 131072 sockets need 15.7M.
        assert_eq!(auto.resolve(Some(131_072)), 16 << 20);
        assert!(RingBufferSize::timewait_burst(16 << 20) >= 131_072);
        assert_eq!(auto.resolve(Some(10_000_000)), 64 << 20, "at most 64M");
        assert_eq!(RingBufferSize::Bytes(8192).resolve(Some(131_072)), 8192);
    }
}
