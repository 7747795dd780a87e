//! Trigger fan-out (issue 17): a parent build's `trigger` step starts 100
//! children through one triggerable scheduler, on one worker with room for
//! all of them; the figure is the time from the parent's start to the last
//! child's start (and to the parent's end, all children waited for).

use crate::figures::Figures;
use crate::scenarios::MASTER_LUA_HEAD;
use moonbot_tests::{Backend, TestMaster};
use std::time::Duration;

fn lua(children: usize) -> String {
    let mut lua = format!(
        "{MASTER_LUA_HEAD}  workers = {{ mb.worker {{ name = \"w1\", max_builds = {} }} }},\n  builders = {{\n",
        children + 1
    );
    lua.push_str(
        "    mb.builder { name = \"parent\", workernames = { \"w1\" }, steps = {\n      mb.steps.trigger { schedulers = { \"fan\" }, wait_for_finish = true } } },\n",
    );
    let mut names = Vec::with_capacity(children);
    for i in 0..children {
        lua.push_str(&format!(
            "    mb.builder {{ name = \"c{i:03}\", workernames = {{ \"w1\" }}, steps = {{ mb.steps.shell {{ command = \"true\" }} }} }},\n"
        ));
        names.push(format!("\"c{i:03}\""));
    }
    lua.push_str(&format!(
        "  }},\n  schedulers = {{\n    mb.schedulers.force {{ name = \"force\", builders = {{ \"parent\" }} }},\n    mb.schedulers.triggerable {{ name = \"fan\", builders = {{ {} }} }},\n  }},\n}}\n",
        names.join(", ")
    ));
    lua
}

pub(crate) fn fan_out(children: usize, figures: &mut Figures) -> anyhow::Result<()> {
    let (m, _w) = TestMaster::started_with_worker(&Backend::Sqlite, &lua(children), "w1");
    let mut last_start = Vec::new();
    let mut to_end = Vec::new();
    for _ in 0..3 {
        let brid = m.force(m.builderid("parent"));
        let parent = m.wait_request_done(brid, Duration::from_secs(600));
        anyhow::ensure!(parent["results"] == 0, "the parent failed: {parent}");
        let id = parent["buildid"].as_i64().unwrap_or(0);
        let kids = m.get(&format!("/api/v2/builds/{id}/triggered_builds"))["builds"].clone();
        let kids = kids.as_array().cloned().unwrap_or_default();
        anyhow::ensure!(
            kids.len() == children,
            "{} children, not {children}",
            kids.len()
        );
        let started = parent["started_at"].as_f64().unwrap_or(0.0);
        let latest = kids
            .iter()
            .filter_map(|k| k["started_at"].as_f64())
            .fold(0.0, f64::max);
        last_start.push((latest - started) * 1000.0);
        to_end.push((parent["complete_at"].as_f64().unwrap_or(0.0) - started) * 1000.0);
    }
    last_start.sort_by(f64::total_cmp);
    to_end.sort_by(f64::total_cmp);
    figures.add(
        "trigger_fanout_100_running_ms",
        last_start[last_start.len() / 2],
        "ms",
    );
    figures.add("trigger_fanout_100_done_ms", to_end[to_end.len() / 2], "ms");
    Ok(())
}
