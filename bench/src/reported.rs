//! Issue 18's figure: builds per second that stay fully reported with three
//! reporters configured (two `http_push`, one per start and end and one per
//! finished build, and a Slack-compatible webhook), against the same
//! builds without reporters. A local receiver stands in for the services
//! and answers 200 to everything; "fully reported" ends when it has the
//! last of the 4 messages each build makes. The two masters alternate over
//! [`ROUNDS`] rounds and the figures are medians (the host's noise is as
//! large as the cost).

use crate::Sizes;
use crate::figures::Figures;
use crate::procfs::cpu_seconds;
use crate::scenarios::{builders_lua, force_all, pid, start_master, start_worker};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A receiver counting requests; answers each with 200.
fn receiver() -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("a stream"));
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end().to_ascii_lowercase();
                        if h.is_empty() {
                            break;
                        }
                        if let Some(v) = h.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    seen.fetch_add(1, Ordering::SeqCst);
                    if stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (url, count)
}

/// Rounds of the two masters, alternated (plain first in even rounds,
/// reported first in odd ones): on a shared 2-core machine one pair's cost
/// moves by ±10%, so the figures are the rounds' medians.
const ROUNDS: usize = 4;

/// One master's run of `n` builds: builds/s to the last build's end, to
/// the receiver's last message (with reporters), and master CPU ms a build.
struct Run {
    builds_per_s: f64,
    fully_reported_per_s: f64,
    master_cpu_ms: f64,
}

pub(crate) fn reported(sizes: &Sizes, figures: &mut Figures) -> anyhow::Result<()> {
    let n = sizes.builds;
    let (mut plain, mut reported) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            plain.push(run(n, false)?);
            reported.push(run(n, true)?);
        } else {
            reported.push(run(n, true)?);
            plain.push(run(n, false)?);
        }
    }
    let medians: [(&str, &[Run], RunFigure, &str); 5] = [
        (
            "reported_plain_builds_per_s",
            &plain,
            |r| r.builds_per_s,
            "builds/s",
        ),
        (
            "reported_plain_master_cpu_ms_per_build",
            &plain,
            |r| r.master_cpu_ms,
            "ms",
        ),
        (
            "reported_builds_per_s",
            &reported,
            |r| r.builds_per_s,
            "builds/s",
        ),
        (
            "reported_fully_reported_builds_per_s",
            &reported,
            |r| r.fully_reported_per_s,
            "builds/s",
        ),
        (
            "reported_master_cpu_ms_per_build",
            &reported,
            |r| r.master_cpu_ms,
            "ms",
        ),
    ];
    for (name, runs, figure, unit) in medians {
        figures.add(name, median(runs.iter().map(figure).collect()), unit);
    }
    // Each round's cost against the plain run beside it, then the median.
    let mut costs = Vec::new();
    let mut added_cpu = Vec::new();
    for (i, (p, r)) in plain.iter().zip(&reported).enumerate() {
        let cost = 100.0 * (1.0 - r.fully_reported_per_s / p.builds_per_s);
        eprintln!(
            "reported: round {i}: plain {:.0}, fully reported {:.0} builds/s, cost {cost:.1}%",
            p.builds_per_s, r.fully_reported_per_s
        );
        costs.push(cost);
        added_cpu.push(r.master_cpu_ms - p.master_cpu_ms);
    }
    figures.add("reported_cost_percent", median(costs), "%");
    figures.add(
        "reported_added_master_cpu_ms_per_build",
        median(added_cpu),
        "ms",
    );
    Ok(())
}

/// One figure of a run.
type RunFigure = fn(&Run) -> f64;

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    (values[(values.len() - 1) / 2] + values[values.len() / 2]) / 2.0
}

/// `n` builds on a fresh master, with the three reporters or without.
fn run(n: usize, with_reporters: bool) -> anyhow::Result<Run> {
    let receiver = with_reporters.then(receiver);
    let reporters = match &receiver {
        Some((url, _)) => format!(
            r#"  reporters = {{
    mb.reporters.http_push {{ name = "starts-ends", url = "{url}/push" }},
    mb.reporters.http_push {{ name = "results", url = "{url}/results",
      generators = {{ mb.generators.build_status {{ mode = {{ "all" }} }} }} }},
    mb.reporters.slack {{ webhook = "{url}/slack" }},
  }},
"#
        ),
        None => String::new(),
    };
    let m = start_master(&builders_lua(4, "true", &reporters));
    let _w = start_worker(&m, "w1");
    let ids: Vec<i64> = (0..4).map(|i| m.builderid(&format!("b{i:04}"))).collect();
    let cpu = cpu_seconds(pid(m.pid()))?;
    let started = Instant::now();
    let (elapsed, _) = force_all(&m, &ids, n)?;
    if let Some((_, received)) = &receiver {
        let expected = 4 * n;
        let deadline = Instant::now() + Duration::from_secs(600);
        while received.load(Ordering::SeqCst) < expected {
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {expected} messages arrived",
                received.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(Run {
        builds_per_s: n as f64 / elapsed,
        fully_reported_per_s: n as f64 / started.elapsed().as_secs_f64(),
        // The master's CPU per build (to the last message): steadier than
        // the rates, and the reporters' own cost (not the receiver's).
        master_cpu_ms: (cpu_seconds(pid(m.pid()))? - cpu) * 1000.0 / n as f64,
    })
}
