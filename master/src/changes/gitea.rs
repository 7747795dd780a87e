//! Gitea's webhook events as changes. Gitea sends GitHub's payloads (see
//! [`super::github`] for what each event makes), with three differences this
//! reader absorbs: a push lists its commits newest first (the changes are
//! made oldest first all the same), a pull request's new commits are
//! `synchronized`, and its properties are named `gitea.*`. Gitea also sends
//! `create` and `delete` events beside a push's: they make no change (the
//! push made them).

use super::PayloadError;
use super::github::{GITEA, read_as};
use super::{HookOutcome, HookSettings};
use serde_json::Value;

/// Read one delivery: `event` is its `X-Gitea-Event` header.
pub fn read(
    event: &str,
    payload: &Value,
    settings: &HookSettings,
) -> Result<HookOutcome, PayloadError> {
    read_as(&GITEA, event, payload, settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_case(event: &str, name: &str) -> HookOutcome {
        let payload = crate::changes::fixture("gitea", name);
        read(event, &payload, &HookSettings::default()).unwrap()
    }

    #[test]
    fn each_fixture_makes_the_changes_gitea_meant() {
        let cases = [
            ("bbgitea-push", "push", 2, "feature-branch"),
            ("bbgitea-push-modified-files", "push", 1, "master"),
            ("goscm-push", "push", 1, "master"),
            (
                "goscm-pull_request_opened",
                "pull_request",
                1,
                "refs/pull/1/head",
            ),
            (
                "goscm-pull_request_synchronized",
                "pull_request",
                1,
                "refs/pull/1/head",
            ),
            (
                "goscm-pull_request_reopened",
                "pull_request",
                1,
                "refs/pull/1/head",
            ),
            ("goscm-pull_request_closed", "pull_request", 0, ""),
            ("goscm-pull_request_merged", "pull_request", 0, ""),
            ("goscm-pull_request_edited", "pull_request", 0, ""),
            ("goscm-tag_create", "create", 0, ""),
            ("goscm-branch_delete", "delete", 0, ""),
        ];
        crate::changes::check_fixtures("gitea", read, &cases);
    }

    #[test]
    fn a_push_is_made_oldest_first() {
        let out = read_case("push", "bbgitea-push");
        let revisions: Vec<_> = out
            .changes
            .iter()
            .map(|c| c.revision.clone().unwrap())
            .collect();
        assert!(revisions[0].starts_with("ad7157cc"), "{revisions:?}");
        assert!(revisions[1].starts_with("9d7157cc"), "{revisions:?}");
        assert_eq!(out.changes[1].when_timestamp, Some(1_536_063_014.0));
        assert_eq!(out.changes[0].author, "Max Mustermann <max@example.com>");
        let pr = read_case("pull_request", "goscm-pull_request_opened");
        assert_eq!(pr.changes[0].properties["gitea.number"], 1);
        assert!(pr.changes[0].comments.starts_with("Gitea Pull Request #1"));
    }
}
