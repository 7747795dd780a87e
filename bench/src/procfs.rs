//! Memory and CPU time of a process, from `/proc/PID/status` and `/proc/PID/stat`
//! (Linux only, as the bench is).

/// Resident memory now (`VmRSS`) and at its peak (`VmHWM`), in MiB.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memory {
    pub rss_mib: f64,
    pub peak_mib: f64,
}

pub(crate) fn memory(pid: u32) -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| anyhow::anyhow!("no {name} for pid {pid}"))?;
        let kib: f64 = line
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("malformed {name} line"))?
            .parse()?;
        Ok(kib / 1024.0)
    };
    Ok(Memory {
        rss_mib: field("VmRSS:")?,
        peak_mib: field("VmHWM:")?,
    })
}

/// Samples a process's RSS on a thread until stopped; reports the highest seen.
pub(crate) struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<f64>,
}

impl RssSampler {
    pub(crate) fn start(pid: u32) -> RssSampler {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak: f64 = 0.0;
            while !stopped.load(Ordering::SeqCst) {
                if let Ok(m) = memory(pid) {
                    peak = peak.max(m.rss_mib);
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            peak
        });
        RssSampler { stop, thread }
    }

    /// Stop sampling; the highest RSS seen, in MiB.
    pub(crate) fn finish(self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap_or(0.0)
    }
}

/// CPU time the process has used so far, user and system, all its threads, in
/// seconds (`utime + stime` of `/proc/PID/stat`, in clock ticks of 1/100 s).
///
/// Why: builds per second move with whatever else the shared machine does;
/// the master's CPU per build is what a change to the write path changes.
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    const TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count from its closing paren.
    let after_name = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow::anyhow!("malformed /proc/{pid}/stat"))?
        .1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the whole line are the 12th and 13th after the name.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
            .parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / TICKS_PER_SECOND)
}
