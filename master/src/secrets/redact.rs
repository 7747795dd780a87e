//! Redaction: every secret a build used is replaced by `<NAME>` in its logs,
//! step summaries and the master's messages about it.
//!
//! Why line by line: logs are stored as lines, and the log writer assembles
//! a line from however many output frames it took before redacting it, so a
//! secret split across two frames is still found. A multi-line secret (a
//! private key) is redacted one line at a time: each of its lines of at
//! least [`super::MIN_SECRET_LEN`] characters is a pattern of its own, so
//! none of it shows, wherever the output breaks. The patterns are matched
//! together by one Aho-Corasick automaton (the `aho-corasick` crate).

use super::{MIN_SECRET_LEN, Secret};
use aho_corasick::{AhoCorasick, MatchKind};
use std::sync::{Arc, Mutex, MutexGuard};

/// The secrets one build used; cloned handles share them.
#[derive(Clone, Default)]
pub struct Redactor(Arc<Mutex<Patterns>>);

#[derive(Default)]
struct Patterns {
    /// Each pattern with its replacement, `<NAME>`.
    patterns: Vec<(String, String)>,
    matcher: Option<AhoCorasick>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} patterns)", self.lock().patterns.len())
    }
}

impl Redactor {
    fn lock(&self) -> MutexGuard<'_, Patterns> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Redact `secret` from now on (each of its lines, for a multi-line one).
    pub fn add(&self, secret: &Secret) {
        let mut p = self.lock();
        let replacement = format!("<{}>", secret.name());
        let mut changed = false;
        for line in secret.value().lines() {
            let line = line.trim_end_matches('\r');
            if line.chars().count() < MIN_SECRET_LEN
                || p.patterns.iter().any(|(known, _)| known == line)
            {
                continue;
            }
            p.patterns.push((line.to_string(), replacement.clone()));
            changed = true;
        }
        if changed {
            let matcher = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(p.patterns.iter().map(|(pattern, _)| pattern))
                .ok();
            p.matcher = matcher;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lock().patterns.is_empty()
    }

    /// `line` with every secret replaced; `None` when it holds none.
    pub fn redact_bytes(&self, line: &[u8]) -> Option<Vec<u8>> {
        let p = self.lock();
        let matcher = p.matcher.as_ref()?;
        matcher.find(line)?;
        let replacements: Vec<&[u8]> = p.patterns.iter().map(|(_, r)| r.as_bytes()).collect();
        Some(matcher.replace_all_bytes(line, &replacements))
    }

    /// `text` with every secret replaced.
    pub fn redact(&self, text: &str) -> String {
        match self.redact_bytes(text.as_bytes()) {
            Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            None => text.to_string(),
        }
    }
}

impl Redactor {
    /// `value` with every string in it redacted (a property a step set).
    pub fn redact_json(&self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::String(s) => Value::String(self.redact(s)),
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.redact_json(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.redact(k), self.redact_json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, value: &str) -> Secret {
        Secret {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn every_occurrence_is_replaced_by_the_name() {
        let r = Redactor::default();
        assert_eq!(r.redact("nothing yet"), "nothing yet");
        r.add(&secret("token", "hunter22"));
        assert_eq!(
            r.redact("curl -H 'Bearer hunter22' x; echo hunter22"),
            "curl -H 'Bearer <token>' x; echo <token>"
        );
        assert_eq!(r.redact_bytes(b"clean line\n"), None);
    }

    #[test]
    fn a_multi_line_secret_is_redacted_line_by_line() {
        let r = Redactor::default();
        r.add(&secret(
            "key",
            "-----BEGIN KEY-----\nMIIEabcdefgh\r\nxy\nQUJDREVGR0g=\n-----END KEY-----\n",
        ));
        let shown = r.redact(
            "cat key:\n-----BEGIN KEY-----\nMIIEabcdefgh\nQUJDREVGR0g=\n-----END KEY-----\nxy\n",
        );
        assert_eq!(
            shown, "cat key:\n<key>\n<key>\n<key>\n<key>\nxy\n",
            "lines shorter than 4 characters are left alone"
        );
    }

    #[test]
    fn the_longest_overlapping_secret_wins() {
        let r = Redactor::default();
        r.add(&secret("short", "abcd"));
        r.add(&secret("long", "abcdefgh"));
        assert_eq!(r.redact("abcdefgh abcd"), "<long> <short>");
    }
}
