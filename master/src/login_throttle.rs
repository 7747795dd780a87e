//! Backoff for failed web logins, so a flood of wrong passwords costs the
//! master little and guesses slowly.
//!
//! Each failure counts against the address it came from and against the user
//! name *from that address*: after [`FREE_FAILURES`], the next attempt on
//! either key must wait a delay that doubles with each further failure, up to
//! [`MAX_DELAY`]. An attempt inside the delay is refused at once, before the
//! (deliberately slow) password hash, so a flood from one address soon costs no
//! hashing at all. The user name counts per address so that a flood against a
//! user cannot lock that user out of logging in from elsewhere. A success
//! clears both keys. Everything is in memory: a restart forgives.
//!
//! Password hashes also run one at a time ([`LoginThrottle::hashing`]), so
//! floods from many addresses at once queue behind each other instead of
//! taking every core from the API.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed on a key before the backoff starts.
pub const FREE_FAILURES: u32 = 3;
/// The first delay; each further failure doubles it.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// Keys with no failure for this long are forgotten (bounds the map).
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// How often idle keys are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    /// No attempt on this key before then.
    until: Instant,
}

#[derive(Default)]
struct Failed {
    by_key: HashMap<String, Failures>,
    /// When keys idle for [`FORGET_AFTER`] were last forgotten.
    pruned: Option<Instant>,
}

#[derive(Default)]
pub struct LoginThrottle {
    failures: Mutex<Failed>,
    /// Held while a password is hashed.
    pub hashing: tokio::sync::Mutex<()>,
}

fn keys(user: &str, from: Option<IpAddr>) -> [String; 2] {
    let from = from.map_or_else(|| "unknown".to_string(), |a| a.to_string());
    [
        format!("address {from}"),
        format!("user {user} from {from}"),
    ]
}

impl LoginThrottle {
    /// How long this attempt must still wait, if it must.
    pub fn wait(&self, user: &str, from: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        keys(user, from)
            .iter()
            .filter_map(|k| failures.by_key.get(k))
            .filter(|f| f.until > now)
            .map(|f| f.until - now)
            .max()
    }

    /// Count a wrong password.
    pub fn failed(&self, user: &str, from: Option<IpAddr>, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        // Forget idle keys at most once a minute, not at every failure: a
        // flood from many addresses would otherwise scan them all each time.
        if failures
            .pruned
            .is_none_or(|at| now.duration_since(at) >= PRUNE_EVERY)
        {
            failures
                .by_key
                .retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
            failures.pruned = Some(now);
        }
        for key in keys(user, from) {
            let f = failures.by_key.entry(key).or_insert(Failures {
                count: 0,
                last: now,
                until: now,
            });
            f.count += 1;
            f.last = now;
            if f.count >= FREE_FAILURES {
                let doublings = (f.count - FREE_FAILURES).min(16);
                let delay = FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY);
                f.until = now + delay;
            }
        }
    }

    /// A right password: forget this address's and this user's failures.
    pub fn succeeded(&self, user: &str, from: Option<IpAddr>) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for key in keys(user, from) {
            failures.by_key.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_per_address_and_per_user_from_it() {
        let t = LoginThrottle::default();
        let here: Option<IpAddr> = Some([10, 0, 0, 1].into());
        let there: Option<IpAddr> = Some([10, 0, 0, 2].into());
        let start = Instant::now();
        for _ in 0..FREE_FAILURES - 1 {
            t.failed("ana", here, start);
            assert_eq!(t.wait("ana", here, start), None);
        }
        t.failed("ana", here, start);
        assert_eq!(t.wait("ana", here, start), Some(FIRST_DELAY));
        // The address waits for any user; ana from elsewhere does not.
        assert_eq!(t.wait("bob", here, start), Some(FIRST_DELAY));
        assert_eq!(t.wait("ana", there, start), None);
        // Each further failure doubles the delay, up to the longest.
        let later = start + FIRST_DELAY;
        assert_eq!(t.wait("ana", here, later), None);
        t.failed("ana", here, later);
        assert_eq!(t.wait("ana", here, later), Some(FIRST_DELAY * 2));
        for _ in 0..20 {
            t.failed("ana", here, later);
        }
        assert_eq!(t.wait("ana", here, later), Some(MAX_DELAY));
        // A right password clears the address and the user.
        t.succeeded("ana", here);
        assert_eq!(t.wait("ana", here, later), None);
    }
}
