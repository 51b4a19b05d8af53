//! The figures: a table on stdout, and JSON for `cargo xtask bench`.

use super::{BATCH, RUNS, memory::MemoryFigures, replay::StreamRun, stream::Expected};

/// `1234567` -> `1_234_567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut s = String::with_capacity(digits.len() * 4 / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            s.push('_');
        }
        s.push(d);
    }
    s
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "positive figures far below 2^64, rounded for display"
)]
fn whole(x: f64) -> u64 {
    x.round() as u64
}

/// The stream's runs, each way of feeding it fastest first.
pub struct StreamFigures {
    pub expected: Expected,
    /// Decoded events applied.
    pub track: Vec<StreamRun>,
    /// Records decoded, then applied.
    pub decode_track: Vec<StreamRun>,
    /// The same, the records written on another CPU; empty with one CPU.
    pub decode_track_other_cpu: Vec<StreamRun>,
    /// The same, each batch pushed out of the writer's caches first; empty with one CPU.
    pub decode_track_other_cpu_evicted: Vec<StreamRun>,
    /// The same, every transition reported (a client reads them).
    pub decode_track_plain: Vec<StreamRun>,
    /// Records decoded, then applied, of the dense stream (connections four times as often).
    pub decode_track_dense: Vec<StreamRun>,
}

fn best(runs: &[StreamRun]) -> &StreamRun {
    &runs[0]
}

fn median(runs: &[StreamRun]) -> &StreamRun {
    &runs[runs.len() / 2]
}

impl StreamFigures {
    fn rate(&self, r: &StreamRun) -> f64 {
        self.expected.events() as f64 / r.elapsed.as_secs_f64()
    }

    fn ns_per_event(&self, r: &StreamRun) -> f64 {
        r.elapsed.as_secs_f64() * 1e9 / self.expected.events() as f64
    }

    /// Figures of one way of feeding the stream, as JSON.
    fn json(&self, runs: &[StreamRun]) -> serde_json::Value {
        serde_json::json!({
            "runs_seconds": runs.iter().map(|r| r.elapsed.as_secs_f64()).collect::<Vec<_>>(),
            "best_events_per_s": self.rate(best(runs)),
            "median_events_per_s": self.rate(median(runs)),
            "best_ns_per_event": self.ns_per_event(best(runs)),
            "median_ns_per_event": self.ns_per_event(median(runs)),
        })
    }
}

pub fn print_table(stream: &StreamFigures, sockets: u64, memory: &[MemoryFigures]) {
    let (expected, first) = (&stream.expected, best(&stream.track));
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("tracker benchmark (one thread decodes and tracks; {build} build)");
    println!(
        "stream: {} connections ({} closed with SO_LINGER 0), {} events, {} reports ({} with \
         a client reading every transition)",
        grouped(expected.connections),
        grouped(expected.linger),
        grouped(expected.events()),
        grouped(first.reports),
        grouped(best(&stream.decode_track_plain).reports),
    );
    println!(
        "  up to {} sockets and {} timewait sockets tracked (seen between batches); \
         {RUNS} runs each, batches of {BATCH}",
        grouped(first.peak_sockets as u64),
        grouped(first.peak_timewait as u64),
    );
    let dense = best(&stream.decode_track_dense);
    println!(
        "  dense: the same connections four times as often, up to {} sockets and {} timewait \
         sockets tracked",
        grouped(dense.peak_sockets as u64),
        grouped(dense.peak_timewait as u64),
    );
    println!(
        "  {:<32} {:<8} {:>12} {:>9}",
        "input", "run", "events/s", "ns/event"
    );
    for (input, runs) in [
        ("track only", &stream.track),
        ("decode+track", &stream.decode_track),
        ("decode+track, other CPU", &stream.decode_track_other_cpu),
        (
            "decode+track, other CPU, evicted",
            &stream.decode_track_other_cpu_evicted,
        ),
        ("decode+track, a client", &stream.decode_track_plain),
        ("decode+track, dense", &stream.decode_track_dense),
    ] {
        if runs.is_empty() {
            println!("  {input:<32} (one CPU: not run)");
            continue;
        }
        for (name, r) in [("best", best(runs)), ("median", median(runs))] {
            println!(
                "  {input:<32} {name:<8} {:>12} {:>9.1}",
                grouped(whole(stream.rate(r))),
                stream.ns_per_event(r)
            );
        }
    }
    println!(
        "memory: {} sockets held (live sockets, or timewait sockets); {RUNS} runs each in a \
         fresh process (medians; insert: best, median)",
        grouped(sockets)
    );
    println!(
        "  {:<13} {:>25} {:>17} {:>16} {:>12}",
        "held", "heap bytes/socket (est.)", "RSS bytes/socket", "insert events/s", "median"
    );
    for m in memory {
        println!(
            "  {:<13} {:>25.1} {:>17.1} {:>16} {:>12}",
            m.held.name(),
            m.median(|r| r.heap_bytes_per_socket),
            m.median(|r| r.rss_bytes_per_socket),
            grouped(whole(m.best_insert())),
            grouped(whole(m.median(|r| r.insert_events_per_s))),
        );
    }
}

/// The track-only figures stay where they were (`stream.best_events_per_s`, ...); the
/// decode+track ones are under `stream.decode_track`, with the records written on another CPU
/// under `stream.decode_track_other_cpu` and, pushed out of that CPU's caches first,
/// `stream.decode_track_other_cpu_evicted` (both absent with one CPU), with a client reading every
/// transition under `stream.decode_track_client`, and of the dense stream under
/// `stream.decode_track_dense` (with its peaks).
pub fn to_json(
    stream: &StreamFigures,
    sockets: u64,
    memory: &[MemoryFigures],
) -> serde_json::Value {
    let (expected, first) = (&stream.expected, best(&stream.track));
    let mut figures = serde_json::json!({
        "connections": expected.connections,
        "linger_connections": expected.linger,
        "events": expected.events(),
        "reports": first.reports,
        "peak_tracked_sockets": first.peak_sockets,
        "peak_tracked_timewait": first.peak_timewait,
        "batch": BATCH,
    });
    let track = stream.json(&stream.track);
    for (k, v) in track.as_object().expect("an object") {
        figures[k] = v.clone();
    }
    figures["decode_track"] = stream.json(&stream.decode_track);
    if !stream.decode_track_other_cpu.is_empty() {
        figures["decode_track_other_cpu"] = stream.json(&stream.decode_track_other_cpu);
        figures["decode_track_other_cpu_evicted"] =
            stream.json(&stream.decode_track_other_cpu_evicted);
    }
    figures["decode_track_client"] = stream.json(&stream.decode_track_plain);
    figures["reports_client"] = best(&stream.decode_track_plain).reports.into();
    let dense = best(&stream.decode_track_dense);
    figures["decode_track_dense"] = stream.json(&stream.decode_track_dense);
    figures["decode_track_dense"]["peak_tracked_sockets"] = dense.peak_sockets.into();
    figures["decode_track_dense"]["peak_tracked_timewait"] = dense.peak_timewait.into();
    serde_json::json!({
        "stream": figures,
        "memory": {
            "sockets": sockets,
            "families": memory.iter().map(|m| serde_json::json!({
                "family": m.held.name(),
                "heap_bytes_per_socket": m.median(|r| r.heap_bytes_per_socket),
                "rss_bytes_per_socket": m.median(|r| r.rss_bytes_per_socket),
                "best_insert_events_per_s": m.best_insert(),
                "median_insert_events_per_s": m.median(|r| r.insert_events_per_s),
                "runs": m.runs,
            })).collect::<Vec<_>>(),
        },
    })
}
