//! Capability sets: the ones a systemd unit grants, and the hex masks of /proc/PID/status
//! (CapEff, CapPrm, ...) decoded into names, so the two can be compared.

use std::collections::BTreeSet;

use anyhow::{Context as _, bail};

/// Capability names by bit number (linux/capability.h).
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

pub type CapSet = BTreeSet<String>;

/// The names set in a /proc/PID/status mask such as `000000c000280004`; unknown bits are named
/// by number.
pub fn decode(hex: &str) -> anyhow::Result<CapSet> {
    let mask = u64::from_str_radix(hex.trim(), 16)
        .with_context(|| format!("{hex:?} is not a capability mask"))?;
    Ok((0..64)
        .filter(|bit| mask & (1 << bit) != 0)
        .map(|bit| {
            NAMES
                .get(bit)
                .map_or_else(|| format!("bit {bit}"), |n| (*n).to_owned())
        })
        .collect())
}

/// The capabilities a unit file lists under `key` (e.g. `AmbientCapabilities`); several lines
/// add up, as systemd reads them. A `~` (inverted) list is not what this reads.
pub fn from_unit(unit: &str, key: &str) -> anyhow::Result<CapSet> {
    let mut set = CapSet::new();
    let mut seen = false;
    for line in unit.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.trim() != key {
            continue;
        }
        seen = true;
        let v = v.trim();
        if v.starts_with('~') {
            bail!("{key}={v}: an inverted list; compare by hand");
        }
        for name in v.split_whitespace() {
            if !NAMES.contains(&name) {
                bail!("{key} lists {name}, which is no capability known here");
            }
            set.insert(name.to_owned());
        }
    }
    if !seen {
        bail!("the unit sets no {key}");
    }
    Ok(set)
}

/// "as listed", or what is extra and what is missing.
pub fn difference(got: &CapSet, want: &CapSet) -> Option<String> {
    let extra: Vec<&str> = got.difference(want).map(String::as_str).collect();
    let missing: Vec<&str> = want.difference(got).map(String::as_str).collect();
    if extra.is_empty() && missing.is_empty() {
        return None;
    }
    Some(format!(
        "extra: {}; missing: {}",
        if extra.is_empty() {
            "none".to_owned()
        } else {
            extra.join(" ")
        },
        if missing.is_empty() {
            "none".to_owned()
        } else {
            missing.join(" ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_decode_to_names() {
        // CAP_DAC_READ_SEARCH (2), CAP_SYS_PTRACE (19), CAP_SYS_ADMIN (21), CAP_SYSLOG (34),
        // CAP_PERFMON (38), CAP_BPF (39).
        let set = decode("000000c400280004").unwrap();
        let names: Vec<&str> = set.iter().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "CAP_BPF",
                "CAP_DAC_READ_SEARCH",
                "CAP_PERFMON",
                "CAP_SYSLOG",
                "CAP_SYS_ADMIN",
                "CAP_SYS_PTRACE"
            ]
        );
        assert!(decode("0000000000000000").unwrap().is_empty());
        assert_eq!(decode("000001ffffffffff").unwrap().len(), 41);
        assert!(decode("8000000000000000").unwrap().contains("bit 63"));
        assert!(decode("xyz").is_err());
    }

    #[test]
    fn unit_lists_add_up_and_compare() {
        let unit = "[Service]\n# CapabilityBoundingSet=CAP_CHOWN\nAmbientCapabilities=CAP_BPF CAP_PERFMON\n\
                    AmbientCapabilities=CAP_SYSLOG\nCapabilityBoundingSet=CAP_BPF\n";
        let ambient = from_unit(unit, "AmbientCapabilities").unwrap();
        assert_eq!(ambient.len(), 3);
        assert_eq!(from_unit(unit, "CapabilityBoundingSet").unwrap().len(), 1);
        assert!(from_unit(unit, "NoSuchKey").is_err());
        assert!(from_unit("AmbientCapabilities=~CAP_BPF\n", "AmbientCapabilities").is_err());
        assert!(from_unit("AmbientCapabilities=CAP_BOGUS\n", "AmbientCapabilities").is_err());
        let got = decode("000000c400000000").unwrap();
        assert_eq!(difference(&got, &ambient), None);
        let more = decode("000000c400000001").unwrap();
        assert_eq!(
            difference(&more, &ambient).as_deref(),
            Some("extra: CAP_CHOWN; missing: none")
        );
    }
}
