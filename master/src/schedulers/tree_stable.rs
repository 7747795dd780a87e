//! Tree-stable timers: when a change scheduler's waiting changes build.
//!
//! One timer per group (everything for `single_branch`, each branch for
//! `any_branch`). An important change starts its group's timer or starts it
//! again; an unimportant one restarts a running timer but starts none (it
//! rides along with the next important change, as in Buildbot). The timers
//! run on tokio's clock, so tests drive them in virtual time
//! (`start_paused`) instead of waiting; after a restart they are worked out
//! again from when each waiting change was classified.

use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// The running timers: group → when it builds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeStableTimers {
    deadlines: BTreeMap<String, Instant>,
}

impl TreeStableTimers {
    /// A change of `group` was taken now.
    pub fn taken(&mut self, group: String, important: bool, wait: Duration) {
        if important || self.deadlines.contains_key(&group) {
            self.deadlines.insert(group, Instant::now() + wait);
        }
    }

    /// An important change of `group`, classified at `classified_at`
    /// (seconds since 1970; `wall_now` is now on that clock), waiting since
    /// before a restart or a reconfigure: its timer runs out `wait` seconds
    /// after it was classified (at once if that has passed). The latest
    /// change of a group sets its timer.
    pub fn restore(&mut self, group: String, classified_at: f64, wall_now: f64, wait: f64) {
        let left = (classified_at + wait - wall_now).max(0.0);
        let at = Instant::now() + Duration::from_secs_f64(left);
        let slot = self.deadlines.entry(group).or_insert(at);
        *slot = (*slot).max(at);
    }

    /// The groups whose timer has run out.
    pub fn due(&self) -> Vec<String> {
        let now = Instant::now();
        self.deadlines
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(group, _)| group.clone())
            .collect()
    }

    /// A group was built: its timer is done.
    pub fn remove(&mut self, group: &str) {
        self.deadlines.remove(group);
    }

    /// The first timer to run out.
    pub fn next(&self) -> Option<Instant> {
        self.deadlines.values().min().copied()
    }

    pub fn clear(&mut self) {
        self.deadlines.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const TEN_MINUTES: Duration = Duration::from_secs(600);

    #[tokio::test(start_paused = true)]
    async fn an_important_change_starts_the_timer_and_quiet_lets_it_run_out() {
        let mut timers = TreeStableTimers::default();
        timers.taken("main".into(), false, TEN_MINUTES);
        assert_eq!(
            timers.next(),
            None,
            "an unimportant change alone starts nothing"
        );
        let start = Instant::now();
        timers.taken("main".into(), true, TEN_MINUTES);
        advance(Duration::from_secs(599)).await;
        assert!(timers.due().is_empty());
        // The service sleeps until the next deadline: it wakes exactly then.
        tokio::time::sleep_until(timers.next().unwrap()).await;
        assert_eq!(Instant::now() - start, TEN_MINUTES);
        assert_eq!(timers.due(), ["main"]);
        timers.remove("main");
        assert_eq!(timers.next(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn every_change_of_a_running_timer_starts_it_again() {
        let mut timers = TreeStableTimers::default();
        timers.taken("main".into(), true, TEN_MINUTES);
        advance(Duration::from_secs(400)).await;
        // An unimportant change restarts a running timer…
        timers.taken("main".into(), false, TEN_MINUTES);
        advance(Duration::from_secs(400)).await;
        assert!(
            timers.due().is_empty(),
            "800 s after the first change, 400 after the last"
        );
        // …and so does an important one.
        timers.taken("main".into(), true, TEN_MINUTES);
        advance(Duration::from_secs(599)).await;
        assert!(timers.due().is_empty());
        advance(Duration::from_secs(1)).await;
        assert_eq!(timers.due(), ["main"]);
    }

    #[tokio::test(start_paused = true)]
    async fn each_branch_has_its_own_timer() {
        let mut timers = TreeStableTimers::default();
        timers.taken("main".into(), true, TEN_MINUTES);
        advance(Duration::from_secs(300)).await;
        timers.taken("feature".into(), true, TEN_MINUTES);
        advance(Duration::from_secs(300)).await;
        assert_eq!(
            timers.due(),
            ["main"],
            "feature's change does not hold main back"
        );
        timers.remove("main");
        advance(Duration::from_secs(299)).await;
        assert!(timers.due().is_empty());
        advance(Duration::from_secs(1)).await;
        assert_eq!(timers.due(), ["feature"]);
    }

    #[tokio::test(start_paused = true)]
    async fn restored_timers_count_from_when_the_change_was_classified() {
        let mut timers = TreeStableTimers::default();
        let wall = 1_000_000.0;
        // Classified 100 s before the restart: 500 s left.
        timers.restore("main".into(), wall - 100.0, wall, 600.0);
        // Two waiting changes of a branch: the later one sets the timer.
        timers.restore("feature".into(), wall - 590.0, wall, 600.0);
        timers.restore("feature".into(), wall - 60.0, wall, 600.0);
        // Long past: due at once.
        timers.restore("old".into(), wall - 86_400.0, wall, 600.0);
        assert_eq!(timers.due(), ["old"]);
        timers.remove("old");
        advance(Duration::from_secs(500)).await;
        assert_eq!(timers.due(), ["main"]);
        timers.remove("main");
        advance(Duration::from_secs(39)).await;
        assert!(timers.due().is_empty());
        advance(Duration::from_secs(1)).await;
        assert_eq!(timers.due(), ["feature"]);
    }
}
