//! Builds the eBPF object so that a plain `cargo build` gives a working binary.
use anyhow::Context as _;
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../observer-ebpf");
    let package = Package {
        name: "observer-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default()).context(
        "building the eBPF programs failed; `cargo xtask setup` installs what they need \
         (rust-src for the nightly toolchain, and bpf-linker)",
    )
}
