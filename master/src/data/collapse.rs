//! What `collapse_requests` reads: a builder's pending requests with what
//! they build, and Buildbot's rule for when two of them may become one build.
//!
//! Deciding is the distributor's (it knows the configuration and its Lua
//! functions); recording a collapse is part of starting the build
//! ([`Data::start_build`]), so the collapsed requests end SKIPPED in the
//! same transaction that creates the build they were collapsed into.

use super::buildsets::{PendingRequest, buildset_properties_from, claimed_ids};
use super::{Data, DataError};
use crate::db::entities::{
    buildrequests, buildset_changes, buildset_properties, buildset_sourcestamps, changes,
    sourcestamps,
};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// At most this many pending requests of one builder are looked at for one
/// build.
const MAX_CANDIDATES: u64 = 200;

/// One source stamp of a request, as collapsing compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub codebase: String,
    pub repository: String,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub project: String,
    /// Whether any change has this source stamp (a stamp without one is a
    /// fixed revision, as a forced build asks for).
    pub has_changes: bool,
}

/// A pending request with what it builds.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub request: PendingRequest,
    pub priority: i64,
    /// By codebase.
    pub stamps: BTreeMap<String, Stamp>,
    /// name → (value, source)
    pub properties: BTreeMap<String, (Value, String)>,
    /// The changes its buildset was made from.
    pub changeids: Vec<i64>,
}

impl Candidate {
    /// Buildbot's default rule (`BuildRequest.canBeCollapsed`): the same
    /// codebases, and for each the same repository, branch and project;
    /// where either stamp has no changes, the same revision too; and the
    /// same properties set by the scheduler (other than `scheduler`).
    pub fn compatible(&self, other: &Candidate) -> bool {
        if self.stamps.len() != other.stamps.len()
            || self.scheduler_properties() != other.scheduler_properties()
        {
            return false;
        }
        self.stamps.iter().all(|(codebase, mine)| {
            let Some(theirs) = other.stamps.get(codebase) else {
                return false;
            };
            mine.repository == theirs.repository
                && mine.branch == theirs.branch
                && mine.project == theirs.project
                && ((mine.has_changes && theirs.has_changes)
                    || (!mine.has_changes
                        && !theirs.has_changes
                        && mine.revision == theirs.revision))
        })
    }

    /// The properties its scheduler gave it, `scheduler` aside: requests
    /// that differ in these are different builds (Buildbot 4's rule).
    fn scheduler_properties(&self) -> BTreeMap<&str, &Value> {
        self.properties
            .iter()
            .filter(|(name, (_, source))| *name != "scheduler" && source == "Scheduler")
            .map(|(name, (value, _))| (name.as_str(), value))
            .collect()
    }

    /// The request as a `collapse_requests` Lua function sees it.
    pub fn to_json(&self) -> Value {
        let stamps: Vec<Value> = self
            .stamps
            .values()
            .map(|s| {
                json!({
                    "codebase": s.codebase,
                    "repository": s.repository,
                    "branch": s.branch,
                    "revision": s.revision,
                    "project": s.project,
                })
            })
            .collect();
        json!({
            "buildrequestid": self.request.brid,
            "buildsetid": self.request.buildsetid,
            "priority": self.priority,
            "submitted_at": self.request.submitted_at,
            "sourcestamps": stamps,
            "properties": self
                .properties
                .iter()
                .map(|(name, (value, _))| (name.clone(), value.clone()))
                .collect::<serde_json::Map<_, _>>(),
            "changeids": self.changeids,
        })
    }
}

impl Data {
    /// The pending (incomplete, unclaimed) requests of `builderid`, oldest
    /// first, with their source stamps, properties and changes: five queries
    /// however many there are.
    pub async fn collapse_candidates(&self, builderid: i64) -> Result<Vec<Candidate>, DataError> {
        let rows = buildrequests::Entity::find()
            .filter(buildrequests::Column::Complete.eq(false))
            .filter(buildrequests::Column::Builderid.eq(builderid))
            .filter(buildrequests::Column::Id.not_in_subquery(claimed_ids()))
            .order_by_asc(buildrequests::Column::Id)
            .limit(MAX_CANDIDATES)
            .all(&self.db)
            .await?;
        if rows.len() < 2 {
            return Ok(Vec::new());
        }
        let bsids: Vec<i64> = rows.iter().map(|r| r.buildsetid).collect();
        let links = buildset_sourcestamps::Entity::find()
            .filter(buildset_sourcestamps::Column::Buildsetid.is_in(bsids.clone()))
            .all(&self.db)
            .await?;
        let ssids: BTreeSet<i64> = links.iter().map(|l| l.sourcestampid).collect();
        let stamps: HashMap<i64, sourcestamps::Model> = sourcestamps::Entity::find()
            .filter(sourcestamps::Column::Id.is_in(ssids.iter().copied()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|s| (s.id, s))
            .collect();
        let with_changes: BTreeSet<i64> = changes::Entity::find()
            .select_only()
            .column(changes::Column::Sourcestampid)
            .distinct()
            .filter(changes::Column::Sourcestampid.is_in(ssids.iter().copied()))
            .into_tuple::<i64>()
            .all(&self.db)
            .await?
            .into_iter()
            .collect();
        let mut properties: HashMap<i64, Vec<buildset_properties::Model>> = HashMap::new();
        for p in buildset_properties::Entity::find()
            .filter(buildset_properties::Column::Buildsetid.is_in(bsids.clone()))
            .all(&self.db)
            .await?
        {
            properties.entry(p.buildsetid).or_default().push(p);
        }
        let mut changeids: HashMap<i64, Vec<i64>> = HashMap::new();
        for c in buildset_changes::Entity::find()
            .filter(buildset_changes::Column::Buildsetid.is_in(bsids))
            .order_by_asc(buildset_changes::Column::Changeid)
            .all(&self.db)
            .await?
        {
            changeids.entry(c.buildsetid).or_default().push(c.changeid);
        }
        let mut stamps_of: HashMap<i64, BTreeMap<String, Stamp>> = HashMap::new();
        for link in &links {
            let Some(s) = stamps.get(&link.sourcestampid) else {
                continue;
            };
            stamps_of.entry(link.buildsetid).or_default().insert(
                s.codebase.clone(),
                Stamp {
                    codebase: s.codebase.clone(),
                    repository: s.repository.clone(),
                    branch: s.branch.clone(),
                    revision: s.revision.clone(),
                    project: s.project.clone(),
                    has_changes: with_changes.contains(&s.id),
                },
            );
        }
        Ok(rows
            .into_iter()
            .map(|row| {
                let bsid = row.buildsetid;
                let priority = row.priority.into();
                Candidate {
                    request: PendingRequest::from(row),
                    priority,
                    stamps: stamps_of.remove(&bsid).unwrap_or_default(),
                    properties: buildset_properties_from(
                        properties.remove(&bsid).unwrap_or_default(),
                    ),
                    changeids: changeids.remove(&bsid).unwrap_or_default(),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(brid: i64, stamps: &[(&str, &str, Option<&str>, bool)]) -> Candidate {
        let row = buildrequests::Model {
            id: brid,
            buildsetid: brid,
            builderid: 1,
            priority: 0,
            complete: false,
            results: None,
            submitted_at: 0.0,
            complete_at: None,
            waited_for: false,
            collapsed_into: None,
        };
        Candidate {
            request: PendingRequest::from(row),
            priority: 0,
            stamps: stamps
                .iter()
                .map(|(codebase, branch, revision, has_changes)| {
                    (
                        codebase.to_string(),
                        Stamp {
                            codebase: codebase.to_string(),
                            repository: "https://example.org/r.git".into(),
                            branch: Some(branch.to_string()),
                            revision: revision.map(String::from),
                            project: "p".into(),
                            has_changes: *has_changes,
                        },
                    )
                })
                .collect(),
            properties: BTreeMap::new(),
            changeids: Vec::new(),
        }
    }

    #[test]
    fn changes_on_one_branch_collapse() {
        let a = candidate(1, &[("", "main", Some("aaa"), true)]);
        let b = candidate(2, &[("", "main", Some("bbb"), true)]);
        assert!(a.compatible(&b));
    }

    #[test]
    fn other_branches_and_codebases_do_not() {
        let a = candidate(1, &[("", "main", Some("aaa"), true)]);
        let b = candidate(2, &[("", "dev", Some("bbb"), true)]);
        let c = candidate(3, &[("lib", "main", Some("ccc"), true)]);
        let d = candidate(
            4,
            &[
                ("", "main", Some("aaa"), true),
                ("lib", "main", None, false),
            ],
        );
        assert!(!a.compatible(&b));
        assert!(!a.compatible(&c));
        assert!(!a.compatible(&d));
    }

    #[test]
    fn different_scheduler_properties_do_not() {
        let mut a = candidate(1, &[("", "main", Some("aaa"), true)]);
        let mut b = candidate(2, &[("", "main", Some("bbb"), true)]);
        let set = |c: &mut Candidate, name: &str, value: &str, source: &str| {
            c.properties
                .insert(name.into(), (Value::from(value), source.into()));
        };
        set(&mut a, "scheduler", "one", "Scheduler");
        set(&mut b, "scheduler", "two", "Scheduler");
        set(&mut a, "github.number", "1", "Change");
        set(&mut b, "github.number", "2", "Change");
        assert!(
            a.compatible(&b),
            "the scheduler's name and change properties do not count"
        );
        set(&mut a, "flavour", "debug", "Scheduler");
        assert!(!a.compatible(&b));
        set(&mut b, "flavour", "debug", "Scheduler");
        assert!(a.compatible(&b));
    }

    #[test]
    fn fixed_revisions_collapse_only_when_equal() {
        let forced = candidate(1, &[("", "main", Some("aaa"), false)]);
        let same = candidate(2, &[("", "main", Some("aaa"), false)]);
        let other = candidate(3, &[("", "main", Some("bbb"), false)]);
        let change = candidate(4, &[("", "main", Some("aaa"), true)]);
        assert!(forced.compatible(&same));
        assert!(!forced.compatible(&other));
        assert!(!forced.compatible(&change));
    }
}
