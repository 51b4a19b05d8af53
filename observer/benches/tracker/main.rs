//! How fast the connection tracker digests a recorded-like event stream, and how much memory it
//! holds per tracked socket. Pure userspace: no eBPF, no root; one thread decodes and tracks.
//!
//! The stream is what Linux 6.18 emits for loopback connections where the client closes first
//! (13 events each), with one connection in ten closed by `SO_LINGER {on, 0}` instead (8 events,
//! 2 of them RSTs). A connection starts every millisecond and stays open for about a second, so
//! (after the first minute of replayed time) about 1000 are open and 54 000 in TIME_WAIT at a
//! time, as on a busy server. Every run checks the tracker's counters against the stream, so a
//! broken run cannot pass for a fast one.
//!
//! The stream is fed three ways: as decoded events (track only), and as the ring-buffer
//! records the eBPF programs write on Linux 6.18 x86_64 (`observer::decode::encode`), through
//! `Decoder::decode` (decode+track, what the daemon does per event), once as the daemon runs by
//! default (only notable transitions reported: TIME_WAIT entries and ends, RSTs) and once as
//! while a client (`observer watch`, `observer top`) reads every transition. A fourth series
//! replays the same connections starting four times as often, with four times the timewait
//! sockets tracked: what larger tables cost. Records are written a batch at a time outside the
//! timed part, as the kernel fills the ring buffer; every record is checked to decode back to
//! its event first. They are written by the thread that decodes them, except in a fifth series
//! (not run with one CPU), where a thread on another CPU writes each batch, as the programs
//! write a record on the CPU where its transition happens: what taking the records from
//! another CPU's cache costs the reader; and in a sixth, the same with each batch pushed out
//! of the writer's caches before it is read, as the daemon finds records up to tens of
//! milliseconds after they were written.
//!
//! Run: `cargo bench -p observer --bench tracker [-- --connections N --sockets N --output FILE]`.

#![expect(clippy::cast_precision_loss, reason = "figures for display")]

mod memory;
mod replay;
mod report;
mod stream;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use observer::{decode::encode::linux_6_18, event::ResetReason};

use memory::{Held, MemoryFigures, memory_run, memory_run_apart};
use replay::{CpuPair, Feed, WriterCache, check_records, run_stream};
use report::{StreamFigures, print_table, to_json};
use stream::{DENSE_START_EVERY_NS, Expected, REASON_TCP_STATE, START_EVERY_NS, build_stream};

/// Events applied between two `advance` calls, as one ring-buffer drain of the daemon.
const BATCH: usize = 1024;
const RUNS: usize = 3;

#[derive(Parser)]
#[command(about = "connection tracker throughput and memory per tracked socket")]
struct Options {
    /// Connections in the replayed event stream.
    #[arg(
        long,
        default_value_t = 200_000,
        value_parser = clap::value_parser!(u64).range(1..=4_000_000)
    )]
    connections: u64,
    /// Open sockets tracked at once for the memory figures.
    #[arg(
        long,
        default_value_t = 1_000_000,
        value_parser = clap::value_parser!(u64).range(1..=16_000_000)
    )]
    sockets: u64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Internal: measure one memory run in this (fresh) process, print it as JSON.
    #[arg(long, hide = true, value_parser = ["ipv4", "ipv6", "timewait-ipv4", "timewait-ipv6"])]
    memory_run: Option<String>,
    /// Ignored: cargo bench passes it.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    // What the daemon loads from kernel BTF; the SO_LINGER RSTs are classified by it.
    ResetReason::set_names(vec![(REASON_TCP_STATE, "SK_RST_REASON_TCP_STATE".into())]);

    if let Some(name) = &options.memory_run {
        let held = Held::parse(name)
            .context("--memory-run takes ipv4, ipv6, timewait-ipv4 or timewait-ipv6")?;
        let run = memory_run(held, options.sockets);
        println!("{}", serde_json::to_string(&run)?);
        return Ok(());
    }

    let mut memory = Vec::new();
    for held in Held::ALL {
        let runs = (0..RUNS)
            .map(|_| memory_run_apart(held, options.sockets))
            .collect::<anyhow::Result<_>>()?;
        memory.push(MemoryFigures { held, runs });
    }

    let expected = Expected::of(options.connections);
    let codec = linux_6_18::codec();
    let [events, dense] = [START_EVERY_NS, DENSE_START_EVERY_NS].map(|every| {
        let events = build_stream(options.connections, every);
        assert_eq!(events.len() as u64, expected.events());
        assert!(events.windows(2).all(|w| w[0].mono_ns() <= w[1].mono_ns()));
        check_records(&codec, &events);
        events
    });
    // Alternated, so that a change in the machine's load hits each alike.
    let cpus = CpuPair::find();
    let (mut track, mut decode_track, mut decode_track_plain, mut decode_track_dense) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut decode_track_other_cpu, mut decode_track_other_cpu_evicted) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        track.push(run_stream(&events, Feed::Events, false, &expected));
        decode_track.push(run_stream(&events, Feed::Records(&codec), false, &expected));
        if let Some(cpus) = cpus {
            for (cache, runs) in [
                (WriterCache::Kept, &mut decode_track_other_cpu),
                (WriterCache::Evicted, &mut decode_track_other_cpu_evicted),
            ] {
                runs.push(run_stream(
                    &events,
                    Feed::RecordsFromAnotherCpu(&codec, cpus, cache),
                    false,
                    &expected,
                ));
            }
        }
        decode_track_plain.push(run_stream(&events, Feed::Records(&codec), true, &expected));
        decode_track_dense.push(run_stream(&dense, Feed::Records(&codec), false, &expected));
    }
    drop((events, dense));
    for runs in [
        &mut track,
        &mut decode_track,
        &mut decode_track_other_cpu,
        &mut decode_track_other_cpu_evicted,
        &mut decode_track_plain,
        &mut decode_track_dense,
    ] {
        runs.sort_by_key(|r| r.elapsed);
    }
    let stream = StreamFigures {
        expected,
        track,
        decode_track,
        decode_track_other_cpu,
        decode_track_other_cpu_evicted,
        decode_track_plain,
        decode_track_dense,
    };

    print_table(&stream, options.sockets, &memory);
    if let Some(path) = &options.output {
        let text = serde_json::to_string_pretty(&to_json(&stream, options.sockets, &memory))?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
