//! Kernel symbol addresses from /proc/kallsyms.

use std::{fs, io};

use thiserror::Error;

const KALLSYMS: &str = "/proc/kallsyms";

#[derive(Debug, Error)]
pub enum KallsymsError {
    #[error("reading {KALLSYMS}: {0}")]
    Read(#[source] io::Error),
    #[error("{KALLSYMS} has no symbol {0}")]
    Missing(String),
    #[error(
        "{KALLSYMS} shows {0} at address 0: kernel addresses are hidden from this process. Run \
         with CAP_SYSLOG (root has it), or set kernel.kptr_restrict to 0 and \
         kernel.perf_event_paranoid to 1 or less"
    )]
    Hidden(String),
}

/// The address of a text symbol (`t`/`T`), refusing the all-zero address that a process
/// without CAP_SYSLOG is shown.
pub fn address_of(symbol: &str) -> Result<u64, KallsymsError> {
    let text = fs::read_to_string(KALLSYMS).map_err(KallsymsError::Read)?;
    find(&text, symbol)
}

fn find(text: &str, symbol: &str) -> Result<u64, KallsymsError> {
    for line in text.lines() {
        let mut parts = line.split_ascii_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if name == symbol && matches!(kind, "t" | "T") {
            let addr = u64::from_str_radix(addr, 16).unwrap_or(0);
            return if addr == 0 {
                Err(KallsymsError::Hidden(symbol.to_owned()))
            } else {
                Ok(addr)
            };
        }
    }
    Err(KallsymsError::Missing(symbol.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_text_symbols_and_refuses_hidden_addresses() {
        let text = "ffffffff82006870 t tw_timer_handler\nffffffff81000000 T _stext\n";
        assert_eq!(
            find(text, "tw_timer_handler").unwrap(),
            0xffff_ffff_8200_6870
        );
        assert!(matches!(find(text, "nope"), Err(KallsymsError::Missing(_))));
        let hidden = "0000000000000000 t tw_timer_handler\n";
        let err = find(hidden, "tw_timer_handler").unwrap_err();
        assert!(matches!(err, KallsymsError::Hidden(_)));
        assert!(err.to_string().contains("CAP_SYSLOG"), "{err}");
    }
}
