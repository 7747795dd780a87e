//! The scenarios. Each starts its own master (and workers) so one scenario's
//! history or memory peak cannot leak into another's figures.

use crate::Sizes;
use crate::figures::Figures;
use crate::procfs::{self, RssSampler};
use moonbot_tests::{Backend, LONG, TestMaster, TestWorker, bin, run};
use serde_json::Value;
use std::io::Read;
use std::time::{Duration, Instant};

/// A step command and the builders that run it.
struct Builder {
    name: String,
    command: String,
}

fn builders(count: usize, command: &str) -> Vec<Builder> {
    (0..count)
        .map(|i| Builder {
            name: format!("b{i:04}"),
            command: command.to_string(),
        })
        .collect()
}

/// The start of every bench master.lua: SQLite, loopback, no watcher (only
/// the bench reloads), and no collapsing, as the Buildbot baseline was
/// measured: every request is a build. The table it opens is left open.
pub(crate) const MASTER_LUA_HEAD: &str = r#"local mb = require "moonbot"
return {
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = 0, bind = "127.0.0.1" } },
  db = { url = "@DB@" },
  reconfig = { watch = false },
  collapse_requests = false, -- as the Buildbot baseline: every request is a build
"#;

/// master.lua for SQLite on loopback, every builder on every worker, one force
/// scheduler over all builders; the watcher is off so only the bench reloads.
fn master_lua(builders: &[Builder], workers: &[(&str, Option<u32>)]) -> String {
    let mut lua = format!("{MASTER_LUA_HEAD}  workers = {{\n");
    for (name, max) in workers {
        let max = max
            .map(|m| format!(", max_builds = {m}"))
            .unwrap_or_default();
        lua.push_str(&format!("    mb.worker {{ name = \"{name}\"{max} }},\n"));
    }
    lua.push_str("  },\n  builders = {\n");
    let names: Vec<String> = workers.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    let workernames = names.join(", ");
    for b in builders {
        lua.push_str(&format!(
            "    mb.builder {{ name = \"{}\", workernames = {{ {workernames} }}, steps = {{\n      mb.steps.shell {{ name = \"run\", command = [==[{}]==] }} }} }},\n",
            b.name, b.command
        ));
    }
    lua.push_str("  },\n  schedulers = {\n");
    if !builders.is_empty() {
        let forced: Vec<String> = builders.iter().map(|b| format!("\"{}\"", b.name)).collect();
        lua.push_str(&format!(
            "    mb.schedulers.force {{ name = \"force\", builders = {{ {} }} }},\n",
            forced.join(", ")
        ));
    }
    lua.push_str("  },\n}\n");
    lua
}

/// [`master_lua`] for `count` builders running `command` on worker `w1`
/// (4 builds at once), with `extra` (sections such as `reporters`) added.
pub(crate) fn builders_lua(count: usize, command: &str, extra: &str) -> String {
    let lua = master_lua(&builders(count, command), &[("w1", Some(4))]);
    let end = lua.rfind("}\n").unwrap_or(lua.len());
    format!("{}{extra}}}\n", &lua[..end])
}

pub(crate) fn start_master(lua: &str) -> TestMaster {
    let mut m = TestMaster::create(&Backend::Sqlite, lua);
    m.start();
    m
}

pub(crate) fn start_worker(m: &TestMaster, name: &str) -> TestWorker {
    let mut w = m.make_worker(name, &m.dir.clone());
    w.start();
    m.wait_connected(name);
    w
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// GET on a fresh connection (no keep-alive pool), as a script would.
fn fresh_get(url: &str) -> anyhow::Result<String> {
    let agent = ureq::AgentBuilder::new().build();
    Ok(agent.get(url).call()?.into_string()?)
}

pub(crate) fn pid(p: Option<u32>) -> u32 {
    p.expect("process running")
}

/// Idle master (10 builders, 1 worker connected) and idle worker memory.
pub(crate) fn idle(figures: &mut Figures) -> anyhow::Result<()> {
    let m = start_master(&master_lua(&builders(10, "true"), &[("w1", Some(4))]));
    let w = start_worker(&m, "w1");
    std::thread::sleep(Duration::from_secs(3));
    figures.add(
        "idle_master_rss_mb",
        procfs::memory(pid(m.pid()))?.rss_mib,
        "MiB",
    );
    figures.add(
        "idle_worker_rss_mb",
        procfs::memory(pid(w.pid()))?.rss_mib,
        "MiB",
    );
    Ok(())
}

/// Throughput of trivial builds, single-build latency, and API latency.
pub(crate) fn builds(sizes: &Sizes, figures: &mut Figures) -> anyhow::Result<()> {
    let m = start_master(&master_lua(&builders(4, "true"), &[("w1", Some(4))]));
    let w = start_worker(&m, "w1");
    let ids: Vec<i64> = (0..4).map(|i| m.builderid(&format!("b{i:04}"))).collect();

    // N forced builds, round-robin over 4 builders, from 4 client threads.
    let master_cpu = procfs::cpu_seconds(pid(m.pid()))?;
    let worker_cpu = procfs::cpu_seconds(pid(w.pid()))?;
    let (elapsed, forced) = force_all(&m, &ids, sizes.builds)?;
    figures.add("builds_per_s", sizes.builds as f64 / elapsed, "builds/s");
    // CPU per build (the forces, the builds and the polling above included):
    // steadier than the rate on a shared machine.
    let per_build_ms = |cpu: f64| cpu * 1000.0 / sizes.builds as f64;
    figures.add(
        "builds_master_cpu_ms_per_build",
        per_build_ms(procfs::cpu_seconds(pid(m.pid()))? - master_cpu),
        "ms",
    );
    figures.add(
        "builds_worker_cpu_ms_per_build",
        per_build_ms(procfs::cpu_seconds(pid(w.pid()))? - worker_cpu),
        "ms",
    );
    // How fast the clients could submit, for reading the figure above.
    figures.add("forces_per_s", sizes.builds as f64 / forced, "forces/s");

    // Force → complete, one at a time.
    let mut latencies = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let brid = m.force(ids[0]);
        loop {
            let br = m.get(&format!("/api/v2/buildrequests/{brid}"));
            if br["buildrequests"][0]["complete"] == true {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    figures.add("single_build_latency_ms", median(latencies), "ms");

    let url = format!("{}/api/v2/builds?limit=100&order=-number", m.www);
    let mut api = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let body = fresh_get(&url)?;
        api.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(body.contains("\"builds\""), "unexpected answer: {body}");
    }
    figures.add("api_builds_latency_ms", median(api), "ms");
    Ok(())
}

/// Force `n` builds round-robin over `ids` from 4 client threads and wait
/// for all of them; the seconds from the first force to the last request's
/// `complete_at`, and the seconds the forcing took.
pub(crate) fn force_all(m: &TestMaster, ids: &[i64], n: usize) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let started_at = unix_seconds()?;
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                for i in (t..n).step_by(4) {
                    m.force(ids[i % ids.len()]);
                }
            });
        }
    });
    let forced = started.elapsed().as_secs_f64();
    m.wait_for(
        "every forced build to complete",
        Duration::from_secs(600),
        || {
            let open = m.get("/api/v2/buildrequests?complete=false&limit=1");
            (open["buildrequests"].as_array().is_some_and(Vec::is_empty)).then_some(())
        },
    );
    // The end is the last request's `complete_at` (the master's clock, this
    // machine's): polling finely enough to see it would load the master.
    let last = m.get("/api/v2/buildrequests?order=-complete_at&limit=1");
    let complete_at = last["buildrequests"][0]["complete_at"]
        .as_f64()
        .ok_or_else(|| anyhow::anyhow!("no completed request: {last}"))?;
    Ok((complete_at - started_at, forced))
}

/// Issue 15: what properties and renderables cost. Two builders of five
/// `true` steps each: one plain, one with 20 builder properties whose five
/// steps render their command (an interpolation of four properties, with a
/// conditional), an env value and their description from them.
pub(crate) fn rendered(sizes: &Sizes, figures: &mut Figures) -> anyhow::Result<()> {
    let plain: String = (0..5)
        .map(|i| format!("mb.steps.shell {{ name = \"s{i}\", command = \"true\" }},"))
        .collect();
    let props: String = (0..20).map(|i| format!("p{i} = \"value {i}\", ")).collect();
    let rendered: String = (0..5)
        .map(|i| {
            format!(
                "mb.steps.shell {{ name = \"s{i}\", \
                 command = mb.interpolate(\"true %(prop:p{i})s %(prop:p1{i}:-x)s %(prop:buildername)s %(prop:nope:#?|a|b)s\"), \
                 env = {{ V = mb.property \"p{i}\" }}, \
                 description = mb.interpolate(\"step %(prop:p{i})s\") }},"
            )
        })
        .collect();
    let lua = format!(
        r#"{MASTER_LUA_HEAD}  workers = {{ mb.worker {{ name = "w1", max_builds = 4 }} }},
  builders = {{
    mb.builder {{ name = "plain", workernames = {{ "w1" }}, steps = {{ {plain} }} }},
    mb.builder {{ name = "rendered", workernames = {{ "w1" }}, properties = {{ {props} }}, steps = {{ {rendered} }} }},
  }},
  schedulers = {{ mb.schedulers.force {{ name = "force", builders = {{ "plain", "rendered" }} }} }},
}}
"#
    );
    let m = start_master(&lua);
    let _w = start_worker(&m, "w1");
    let n = (sizes.builds / 2).max(40);
    for name in ["plain", "rendered"] {
        let id = m.builderid(name);
        let cpu = procfs::cpu_seconds(pid(m.pid()))?;
        let (elapsed, _) = force_all(&m, &[id], n)?;
        let per_build = (procfs::cpu_seconds(pid(m.pid()))? - cpu) * 1000.0 / n as f64;
        figures.add(
            &format!("{name}_5_step_builds_per_s"),
            n as f64 / elapsed,
            "builds/s",
        );
        figures.add(
            &format!("{name}_5_step_master_cpu_ms_per_build"),
            per_build,
            "ms",
        );
    }
    Ok(())
}

/// Now, as the master's timestamps are: seconds since the Unix epoch. The
/// master runs on this machine, so its `complete_at` or `connected_at` and
/// this clock can be compared.
pub(crate) fn unix_seconds() -> anyhow::Result<f64> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64())
}

/// Size of the SQLite database and its WAL, in MiB.
fn db_size_mib(m: &TestMaster) -> f64 {
    ["state.sqlite", "state.sqlite-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(m.dir.join(f)).ok())
        .map(|md| md.len() as f64)
        .sum::<f64>()
        / (1024.0 * 1024.0)
}

/// Run one build of the only builder and return it (complete).
fn one_build(m: &TestMaster) -> anyhow::Result<Value> {
    let brid = m.force(m.builderid("b0000"));
    let build = m.wait_request_done(brid, Duration::from_secs(600));
    anyhow::ensure!(build["results"] == 0, "the log build failed: {build}");
    Ok(build)
}

/// A step printing `log_mib` MiB in 100-byte lines: throughput from build start
/// to complete, master peak memory, database size; then the first page and the
/// full download of that log. The same with random base64 lines.
pub(crate) fn log(sizes: &Sizes, figures: &mut Figures) -> anyhow::Result<()> {
    let lines = sizes.log_mib * 1024 * 1024 / 100;
    let line = "x".repeat(99);
    let plain = format!("yes {line} | head -n {lines}");
    // base64 of 3·33 bytes is 132 characters; 99 per line needs 74.25 bytes.
    let random = format!("head -c {} /dev/urandom | base64 -w 99", lines * 99 / 4 * 3);
    for (label, command) in [("", plain), ("_random", random)] {
        let m = start_master(&master_lua(&builders(1, &command), &[("w1", None)]));
        let _w = start_worker(&m, "w1");
        let build = one_build(&m)?;
        let seconds = build["complete_at"].as_f64().unwrap_or(0.0)
            - build["started_at"].as_f64().unwrap_or(0.0);
        figures.add(
            &format!("log_throughput{label}_mb_s"),
            sizes.log_mib as f64 / seconds,
            "MiB/s",
        );
        figures.add(
            &format!("log{label}_master_peak_rss_mb"),
            procfs::memory(pid(m.pid()))?.peak_mib,
            "MiB",
        );
        figures.add(&format!("log{label}_db_size_mb"), db_size_mib(&m), "MiB");
        if !label.is_empty() {
            continue;
        }
        let steps = m.steps(build["buildid"].as_i64().unwrap_or(0));
        let stepid = steps[0]["stepid"].as_i64().unwrap_or(0);
        let logs = m.get(&format!("/api/v2/steps/{stepid}/logs"));
        let logid = logs["logs"][0]["logid"].as_i64().unwrap_or(0);

        // What the log viewer does when opened: its page, then the first
        // 1000 lines (the size of one page of the viewer's script).
        let t = Instant::now();
        let viewer = fresh_get(&format!("{}/logs/{logid}", m.www))?;
        let page = fresh_get(&format!(
            "{}/api/v2/logs/{logid}/contents?offset=0&limit=1000",
            m.www
        ))?;
        anyhow::ensure!(
            viewer.contains("id=\"logview\""),
            "the viewer page has no log view"
        );
        figures.add(
            "log_first_page_ms",
            t.elapsed().as_secs_f64() * 1000.0,
            "ms",
        );
        anyhow::ensure!(page.contains(&line), "the first page holds no log line");

        let sampler = RssSampler::start(pid(m.pid()));
        let t = Instant::now();
        let mut body = ureq::get(&format!("{}/api/v2/logs/{logid}/raw", m.www))
            .call()?
            .into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0usize;
        loop {
            let n = body.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n;
        }
        let seconds = t.elapsed().as_secs_f64();
        let peak = sampler.finish();
        // The raw log also holds the step's header lines (command, directory …).
        anyhow::ensure!(
            (lines * 100..lines * 100 + 4096).contains(&total),
            "downloaded {total} bytes, expected {} and a header",
            lines * 100
        );
        figures.add("log_download_s", seconds, "s");
        figures.add("log_download_master_peak_rss_mb", peak, "MiB");
    }
    Ok(())
}

/// `moonbot reconfig` from 10 to N builders and a no-change reload; then a
/// start-up with N builders, process start to API answering.
pub(crate) fn reconfig_and_startup(sizes: &Sizes, figures: &mut Figures) -> anyhow::Result<()> {
    let workers = [("w1", Some(4))];
    let mut m = start_master(&master_lua(&builders(10, "true"), &workers));
    m.write_config(&master_lua(&builders(sizes.builders, "true"), &workers));
    let reconfig = |what: &str| -> anyhow::Result<f64> {
        let t = Instant::now();
        let (code, out, err) = run("moonbot", &["reconfig", m.path()]);
        let seconds = t.elapsed().as_secs_f64();
        anyhow::ensure!(code == 0, "{what} failed: {out}{err}");
        Ok(seconds)
    };
    let grow = reconfig("reconfig to more builders")?;
    // Every builder, counted page by page: a page's `meta.total` is only
    // what it holds, and a page holds at most 2000.
    let mut builders_now = 0;
    loop {
        let page = m.get(&format!(
            "/api/v2/builders?limit=2000&offset={builders_now}"
        ))["builders"]
            .as_array()
            .map_or(0, Vec::len);
        builders_now += page;
        if page < 2000 {
            break;
        }
    }
    anyhow::ensure!(
        builders_now == sizes.builders,
        "the master lists {builders_now} builders after the reconfig"
    );
    figures.add("reconfig_s", grow, "s");
    figures.add("reconfig_nochange_s", reconfig("no-change reconfig")?, "s");
    m.stop(false);

    let t = Instant::now();
    m.start();
    loop {
        if let Ok(body) = fresh_get(&format!("{}/api/v2/builders?limit=1", m.www))
            && body.contains("\"builders\"")
        {
            break;
        }
        anyhow::ensure!(t.elapsed() < LONG, "the master did not answer");
        std::thread::sleep(Duration::from_millis(1));
    }
    figures.add(
        "master_startup_500_builders_s",
        t.elapsed().as_secs_f64(),
        "s",
    );
    Ok(())
}

/// N workers from one helper process connect to a fresh master: time until
/// the API shows all connected, master memory, and memory per worker.
pub(crate) fn many_workers(sizes: &Sizes, figures: &mut Figures) -> anyhow::Result<()> {
    use moonbot_worker::workdir::{self, CreateOptions};
    let names: Vec<String> = (0..sizes.workers).map(|i| format!("s{i:05}")).collect();
    let workers: Vec<(&str, Option<u32>)> = names.iter().map(|n| (n.as_str(), None)).collect();
    let m = start_master(&master_lua(&[], &workers));
    let swarm = m.tmp.path().join("swarm");
    let ca_pem = std::fs::read_to_string(m.dir.join("pki/ca.crt"))?;
    for name in &names {
        let dir = swarm.join(name);
        let csr = workdir::create(
            &dir,
            &CreateOptions {
                master: m.quic.clone(),
                name: name.clone(),
                ca_pem: ca_pem.clone(),
                admin: None,
                host_description: None,
            },
        )?;
        let signed = moonbot_master::pki::sign_worker_csr(
            &m.dir,
            &std::fs::read_to_string(csr)?,
            moonbot_master::pki::WORKER_CERT_VALIDITY,
        )?;
        std::fs::write(dir.join("worker.crt"), signed.cert_pem)?;
    }

    let t = Instant::now();
    let started_at = unix_seconds()?;
    let mut helper = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n "$(ulimit -Hn)"; exec "$0" swarm "$1""#)
        .arg(bin("moonbot-bench"))
        .arg(&swarm)
        .stdout(std::process::Stdio::null())
        .spawn()?;
    // (workers connected, the latest `connected_at` among them).
    let connected = || -> (usize, f64) {
        let list = m.get(&format!("/api/v2/workers?limit={}", sizes.workers));
        let mut count = 0;
        let mut last = 0.0f64;
        for w in list["workers"].as_array().into_iter().flatten() {
            for c in w["connected_to"].as_array().into_iter().flatten() {
                count += 1;
                last = last.max(c["connected_at"].as_f64().unwrap_or(0.0));
            }
        }
        (count, last)
    };
    // The end is the last worker's `connected_at` (the master's clock, this
    // machine's), so the API can be polled rarely: listing thousands of
    // workers every few milliseconds would load the master it measures.
    let result = loop {
        let (count, last) = connected();
        if count == sizes.workers {
            break Ok(last - started_at);
        }
        if t.elapsed() > Duration::from_secs(120) {
            break Err(anyhow::anyhow!(
                "only {count} of {} workers connected within 120 s",
                sizes.workers
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let helper_rss = procfs::memory(helper.id()).map(|m| m.rss_mib);
    let master = procfs::memory(pid(m.pid()));
    // Keep-alives (the control stream's, and QUIC's PING after 10 s of
    // silence) once all are
    // connected: the master's CPU over a quiet while, in % of one core.
    let quiet = Duration::from_secs(10);
    let cpu_before = procfs::cpu_seconds(pid(m.pid()));
    std::thread::sleep(quiet);
    let idle_cpu = procfs::cpu_seconds(pid(m.pid()))
        .and_then(|after| Ok((after - cpu_before?) * 100.0 / quiet.as_secs_f64()));
    let _ = helper.kill();
    let _ = helper.wait();
    figures.add("many_workers_connect_s", result?, "s");
    figures.add("many_workers_master_rss_mb", master?.rss_mib, "MiB");
    figures.add("many_workers_idle_master_cpu_pct", idle_cpu?, "%");
    figures.add(
        "many_workers_helper_rss_per_worker_kb",
        helper_rss? * 1024.0 / sizes.workers as f64,
        "KiB",
    );
    Ok(())
}

/// Wrong passwords from 32 clients at once, as fast as the master answers
/// them: how fast `/api/v2/builders` answers meanwhile (against idle), how
/// many attempts the backoff lets through, and how long the right password
/// then takes to get in from the same address.
pub(crate) fn login_flood(figures: &mut Figures) -> anyhow::Result<()> {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const CLIENTS: usize = 32;
    const PASSWORD: &str = "the right password";
    let mut hasher = std::process::Command::new(bin("moonbot"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    writeln!(hasher.stdin.take().expect("stdin"), "{PASSWORD}")?;
    let hash = String::from_utf8(hasher.wait_with_output()?.stdout)?
        .trim()
        .to_string();
    let lua = master_lua(&builders(10, "true"), &[("w1", Some(4))]).replacen(
        "return {\n",
        &format!("return {{\n  auth = {{ users = {{ {{ name = \"ana\", password_hash = \"{hash}\" }} }} }},\n"),
        1,
    );
    let m = start_master(&lua);
    let builders_url = format!("{}/api/v2/builders", m.www);
    let api_median_ms = |count: usize| -> anyhow::Result<f64> {
        let agent = ureq::AgentBuilder::new().build();
        let mut times = Vec::with_capacity(count);
        for _ in 0..count {
            let t = Instant::now();
            agent.get(&builders_url).call()?.into_string()?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(median(times))
    };
    figures.add("api_builders_idle_median_ms", api_median_ms(200)?, "ms");

    let login_url = format!("{}/login", m.www);
    let stop = Arc::new(AtomicBool::new(false));
    let (wrong, throttled) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let flood: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (stop, wrong, throttled) = (stop.clone(), wrong.clone(), throttled.clone());
            let url = login_url.clone();
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().redirects(0).build();
                while !stop.load(Ordering::Relaxed) {
                    let user = if i % 2 == 0 {
                        "ana".to_string()
                    } else {
                        format!("guess{i}")
                    };
                    match agent
                        .post(&url)
                        .send_form(&[("username", &user), ("password", "wrong")])
                    {
                        Ok(_) => wrong.fetch_add(1, Ordering::Relaxed),
                        Err(ureq::Error::Status(429, _)) => {
                            throttled.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(_) => 0,
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let (wrong_before, throttled_before) = (
        wrong.load(Ordering::Relaxed),
        throttled.load(Ordering::Relaxed),
    );
    figures.add(
        "api_builders_login_flood_median_ms",
        api_median_ms(200)?,
        "ms",
    );
    let seconds = started.elapsed().as_secs_f64();
    figures.add(
        "login_flood_wrong_answered_per_s",
        (wrong.load(Ordering::Relaxed) - wrong_before) as f64 / seconds,
        "/s",
    );
    figures.add(
        "login_flood_throttled_per_s",
        (throttled.load(Ordering::Relaxed) - throttled_before) as f64 / seconds,
        "/s",
    );
    stop.store(true, Ordering::Relaxed);
    for client in flood {
        let _ = client.join();
    }
    // The right password, from the same address, waiting as told.
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let t = Instant::now();
    loop {
        match agent
            .post(&login_url)
            .send_form(&[("username", "ana"), ("password", PASSWORD)])
        {
            Ok(r) if r.status() == 303 => break,
            Err(ureq::Error::Status(429, r)) => {
                let wait: u64 = r
                    .header("retry-after")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                std::thread::sleep(Duration::from_secs(wait));
            }
            Ok(r) => anyhow::bail!("the right password got {}", r.status()),
            Err(e) => anyhow::bail!("the right password: {e}"),
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(180),
            "the right password never got in"
        );
    }
    figures.add("login_after_flood_s", t.elapsed().as_secs_f64(), "s");
    Ok(())
}
