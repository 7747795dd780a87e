//! Sending Unix signals to processes and process groups, and telling whether
//! they are still alive.
//!
//! The runner stops a command by signalling its whole process group (so
//! background children die too) and `moonbot-worker stop` signals the running
//! worker. Both need `kill(2)`, which the standard library does not expose. The
//! crate's only `unsafe` code is that one call, in the private `kill`; the
//! public functions refuse targets that would reach more than the intended
//! processes (`0`, `1` and negative ids mean "my group", "init" and "everyone").
//!
//! "Alive" ignores zombies: in a container whose init never reaps orphans, a
//! killed background process stays a zombie forever, and waiting for it to
//! vanish would turn every stop into a full SIGTERM grace period. On Linux the
//! liveness checks therefore look at `/proc`; elsewhere they fall back to
//! `kill(pid, 0)`, which counts zombies.

use std::io;

pub use libc::{SIGHUP, SIGKILL, SIGTERM, SIGUSR1};

/// Send `sig` to every process in the process group `pgid`.
///
/// `sig == 0` sends nothing and only checks that the group still has a member.
/// A group with no members left is an error whose `raw_os_error()` is `ESRCH`.
pub fn signal_process_group(pgid: i32, sig: i32) -> io::Result<()> {
    check_target("process group", pgid)?;
    kill(-pgid, sig)
}

/// Send `sig` to the single process `pid` (`sig == 0`: only check it exists).
pub fn signal_process(pid: i32, sig: i32) -> io::Result<()> {
    check_target("process", pid)?;
    kill(pid, sig)
}

/// Does the process group `pgid` still have a member (zombies included)?
pub fn process_group_exists(pgid: i32) -> bool {
    exists(signal_process_group(pgid, 0))
}

/// Does the process `pid` exist (zombies included)?
pub fn process_exists(pid: i32) -> bool {
    exists(signal_process(pid, 0))
}

/// Does the process group `pgid` have a member that has not exited yet?
pub fn process_group_alive(pgid: i32) -> bool {
    if !process_group_exists(pgid) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    let mut seen_any = false;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(stat) = proc_stat(pid) {
            seen_any = true;
            if stat.pgrp == pgid && stat.is_live() {
                return true;
            }
        }
    }
    // An unreadable /proc proves nothing: trust kill(2) then.
    !seen_any
}

/// Is the process `pid` running (exists and is not a zombie)?
pub fn process_alive(pid: i32) -> bool {
    process_exists(pid) && proc_stat(pid).is_none_or(|stat| stat.is_live())
}

/// The fields of `/proc/PID/stat` this module needs.
struct ProcStat {
    state: char,
    pgrp: i32,
}

impl ProcStat {
    fn is_live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parse `/proc/PID/stat` ("pid (comm) state ppid pgrp ..."; comm may contain
/// spaces and parentheses, so fields are counted from the last ')').
fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcStat { state, pgrp })
}

fn exists(probe: io::Result<()>) -> bool {
    // EPERM means it exists but belongs to someone else.
    !matches!(probe, Err(e) if e.raw_os_error() == Some(libc::ESRCH))
}

fn check_target(what: &str, id: i32) -> io::Result<()> {
    if id <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal {what} {id}"),
        ));
    }
    Ok(())
}

/// `kill(2)`: a positive `target` is one process, a negative one the process
/// group `-target`. Callers have checked that `|target| > 1`.
#[allow(unsafe_code)]
fn kill(target: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes two plain integers, touches no memory of ours and
    // has no preconditions; failures are reported through errno.
    let rc = unsafe { libc::kill(target, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_targets_are_refused() {
        for id in [-5, -1, 0, 1] {
            assert_eq!(
                signal_process_group(id, 0).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
            assert_eq!(
                signal_process(id, 0).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        }
    }

    #[test]
    fn probes_see_this_process_and_not_a_dead_one() {
        assert!(process_exists(std::process::id() as i32));
        assert!(process_alive(std::process::id() as i32));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        assert!(!process_exists(pid));
        assert!(!process_alive(pid));
    }

    #[test]
    fn a_zombie_exists_but_is_not_alive() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("true")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Not reaped yet: a zombie once it has exited.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while process_group_alive(pid) {
            assert!(std::time::Instant::now() < deadline, "`true` never exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(process_exists(pid), "still a zombie");
        assert!(process_group_exists(pid));
        assert!(!process_alive(pid));
        child.wait().unwrap();
        assert!(!process_group_exists(pid));
    }

    #[test]
    fn a_running_group_is_alive() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert!(process_group_alive(pid));
        assert!(process_alive(pid));
        signal_process_group(pid, SIGKILL).unwrap();
        child.wait().unwrap();
        assert!(!process_group_alive(pid));
    }
}
