#![no_std]
// This library is empty: observer's build.rs depends on this crate so cargo rebuilds the eBPF
// object when it changes; the programs are in the `observer` binary target (src/main.rs).
