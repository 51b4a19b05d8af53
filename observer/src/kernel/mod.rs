//! Facts about this host's kernel, read where the kernel publishes them: tracefs formats,
//! BTF, /proc/kallsyms, the kernel configuration and timer frequency, this process's privileges, and the
//! per-namespace sysctls that bound TIME_WAIT. The bottom of the pipeline: everything above
//! may read them, they read nothing above.

pub mod btf;
pub mod kallsyms;
pub mod kernel_config;
mod limits;
pub mod privileges;
pub mod tick_rate;
pub mod tracefs;

pub use limits::{NetLimits, max_tw_buckets};
