//! Issue 18's figure: builds per second that stay fully reported with three
//! reporters configured (two `http_push`, one per start and end and one per
//! finished build, and a Slack-compatible webhook), against the same
//! builds without reporters. A local receiver stands in for the services
//! and answers 200 to everything; "fully reported" ends when it has the
//! last of the 4 messages each build makes.

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

pub(crate) fn reported(sizes: &Sizes, figures: &mut Figures) -> anyhow::Result<()> {
    let n = sizes.builds;
    // Without reporters.
    let plain = builders_lua(4, "true", "");
    let m = start_master(&plain);
    let _w = start_worker(&m, "w1");
    let ids: Vec<i64> = (0..4).map(|i| m.builderid(&format!("b{i:04}"))).collect();
    let cpu = cpu_seconds(pid(m.pid()))?;
    let (elapsed, _) = force_all(&m, &ids, n)?;
    figures.add(
        "reported_plain_builds_per_s",
        n as f64 / elapsed,
        "builds/s",
    );
    // The master's CPU per build: steadier than the rates on a shared
    // machine, and the reporters' own cost (the receiver's is not in it).
    let per_build_ms = |cpu: f64| cpu * 1000.0 / n as f64;
    figures.add(
        "reported_plain_master_cpu_ms_per_build",
        per_build_ms(cpu_seconds(pid(m.pid()))? - cpu),
        "ms",
    );
    drop(_w);
    drop(m);

    // With three reporters.
    let (url, received) = receiver();
    let reporters = format!(
        r#"  reporters = {{
    mb.reporters.http_push {{ name = "starts-ends", url = "{url}/push" }},
    mb.reporters.http_push {{ name = "results", url = "{url}/results",
      generators = {{ mb.generators.build_status {{ mode = {{ "all" }} }} }} }},
    mb.reporters.slack {{ webhook = "{url}/slack" }},
  }},
"#
    );
    let m = start_master(&builders_lua(4, "true", &reporters));
    let _w = start_worker(&m, "w1");
    let ids: Vec<i64> = (0..4).map(|i| m.builderid(&format!("b{i:04}"))).collect();
    let cpu = cpu_seconds(pid(m.pid()))?;
    let started = Instant::now();
    let (elapsed, _) = force_all(&m, &ids, n)?;
    figures.add("reported_builds_per_s", n as f64 / elapsed, "builds/s");
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
    figures.add(
        "reported_fully_reported_builds_per_s",
        n as f64 / started.elapsed().as_secs_f64(),
        "builds/s",
    );
    figures.add(
        "reported_master_cpu_ms_per_build",
        per_build_ms(cpu_seconds(pid(m.pid()))? - cpu),
        "ms",
    );
    Ok(())
}
