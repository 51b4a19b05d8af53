//! Build options of the running kernel that the daemon needs (only `CONFIG_HZ` today).

use std::{fs, io::Read as _};

/// The kernel's timer frequency, from /proc/config.gz or /boot/config-<release>; `None` when
/// neither is readable (timewait timeouts are then reported without their scheduled length).
#[must_use]
pub fn hz() -> Option<u32> {
    let from_proc = fs::File::open("/proc/config.gz").ok().and_then(|f| {
        let mut text = String::new();
        flate2::read::GzDecoder::new(f)
            .read_to_string(&mut text)
            .ok()
            .map(|_| text)
    });
    let text = from_proc.or_else(|| {
        let release = fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
        fs::read_to_string(format!("/boot/config-{}", release.trim())).ok()
    })?;
    parse_hz(&text)
}

fn parse_hz(config: &str) -> Option<u32> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_config_hz() {
        assert_eq!(
            parse_hz("# CONFIG_HZ_100 is not set\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n"),
            Some(250)
        );
        assert_eq!(parse_hz("CONFIG_HZ_1000=y\n"), None);
    }
}
