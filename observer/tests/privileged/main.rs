//! The privileged integration tests, in one binary with one copy of their support code: the
//! real probes on the running kernel, real TCP connections inside network namespaces each test
//! creates, the daemon as operators run it, each checked with exact expectations.
//!
//! They need root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN). Without it each test
//! is skipped loudly, and under `CI=true` a skipped test fails. `cargo xtask test` runs them
//! one at a time: they share the kernel, and an exact count must not see another test's load.

#[macro_use]
mod support;

mod bench_smoke;
mod cgroups;
mod daemon_lifecycle;
mod daemon_socket;
mod dead_peers;
mod doctor_cli;
mod kernel;
mod kernel_errors;
mod listeners;
mod run_daemon;
mod sockdiag;
mod tracker;
mod trust;
mod watch_cli;
mod workloads;
