//! KVM or software emulation (TCG), decided by booting once with KVM: /dev/kvm can exist while
//! a KVM guest hangs before its first byte (no nested virtualization). The answer is kept in
//! target/vm/accel.

use std::{path::Path, time::Duration};

use super::{
    guest::{self, Boot, Outcome},
    install::KernelImage,
};

/// A KVM guest prints this within seconds when KVM works.
const MARKER: &str = "observer-kvm-works";
/// TCG boots a Debian kernel in about 6 s; KVM in about one. Past this, KVM is taken to hang.
const TRIAL: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

/// The remembered answer, else a trial boot of `kernel` with KVM.
pub fn decide(vm_dir: &Path, vng_bin: &Path, kernel: &KernelImage) -> anyhow::Result<Accel> {
    let remembered = vm_dir.join("accel");
    match std::fs::read_to_string(&remembered)
        .as_deref()
        .map(str::trim)
    {
        Ok("kvm") => return Ok(Accel::Kvm),
        Ok("tcg") => return Ok(Accel::Tcg),
        _ => {}
    }
    eprintln!(
        "vm: trying KVM (a guest that must print a marker within {}s)",
        TRIAL.as_secs()
    );
    let boot = Boot {
        vng_bin,
        kernel,
        accel: Accel::Kvm,
        memory: "512M",
        rwdir: None,
        exec: &format!("echo {MARKER}"),
        timeout: TRIAL,
        console_log: &vm_dir.join("kvm-trial.log"),
        echo: false,
    };
    let accel = match guest::boot(&boot)? {
        Outcome::Finished { lines, .. } if lines.iter().any(|l| l.contains(MARKER)) => Accel::Kvm,
        _ => Accel::Tcg,
    };
    eprintln!(
        "vm: {} (remembered in {}; delete it to try again)",
        match accel {
            Accel::Kvm => "KVM works",
            Accel::Tcg => "KVM did not boot: software emulation (TCG)",
        },
        remembered.display()
    );
    std::fs::write(&remembered, accel.name())?;
    Ok(accel)
}
