//! The `buildsets` and `buildrequests` collections, and claims.
//!
//! A scheduler adds a buildset with one build request per builder. A master claims
//! a request (one row in `buildrequest_claims`, whose primary key makes the claim
//! atomic) before it starts a build; a build that ends RETRY releases the claim so
//! the request runs again. A request is complete once a build for it finished with
//! any other result. Requests live only in the database, so nothing queued is lost
//! when the master stops or a builder disappears from the config for a while.

use super::batch::{Batch, BatchRows, StatementIndex};
use super::query::{
    FieldKind, ListQuery, Op, QueryError, apply, cut_long_text, fetch_page, mark_cut,
};
use super::reports::ReportEvent;
use super::{Data, DataError, now};
use crate::db::entities::{
    buildrequest_claims, buildrequests, buildset_changes, buildset_properties,
    buildset_sourcestamps, buildsets, scheduler_changes,
};
use crate::mq::Topic;
use crate::mq::topic::{BuildRequestEvent, BuildsetEvent};
use sea_orm::Order;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A build request waiting for a worker, as [`Data::pending_requests`] read it;
/// once [`Data::claim_request`] succeeds it carries this master's claim too.
#[derive(Debug, Clone)]
pub struct PendingRequest {
    pub brid: i64,
    pub buildsetid: i64,
    pub builderid: i64,
    pub submitted_at: f64,
    /// The row as read, so claiming and completing publish the request
    /// without reading it again.
    row: buildrequests::Model,
    claim: Option<buildrequest_claims::Model>,
}

impl PendingRequest {
    /// The request as a builder's Lua functions see it (Buildbot's fields).
    pub fn describe(&self) -> Value {
        json!({
            "buildrequestid": self.brid,
            "buildsetid": self.buildsetid,
            "builderid": self.builderid,
            "priority": self.row.priority,
            "submitted_at": self.submitted_at,
        })
    }
}

impl From<buildrequests::Model> for PendingRequest {
    fn from(row: buildrequests::Model) -> Self {
        PendingRequest {
            brid: row.id,
            buildsetid: row.buildsetid,
            builderid: row.builderid,
            submitted_at: row.submitted_at,
            row,
            claim: None,
        }
    }
}

/// Whose older requests a newer revision supersedes (`cancel_superseded`).
#[derive(Debug, Clone, Copy)]
pub enum Superseded<'a> {
    /// The buildsets this scheduler made.
    Scheduler(&'a str),
    /// This builder's requests, whoever made them.
    Builder(i64),
}

/// A buildset as a dependent scheduler reads it.
#[derive(Debug, Clone)]
pub struct FinishedBuildset {
    pub bsid: i64,
    pub complete: bool,
    pub results: Option<i32>,
    pub external_idstring: Option<String>,
    /// name → (value, source)
    pub properties: BTreeMap<String, (Value, String)>,
    pub sourcestampids: Vec<i64>,
}

/// A buildset just added: its id, and builderid → build request id.
pub type BuildsetIds = (i64, BTreeMap<i64, i64>);

/// A buildset to add ([`Data::add_buildsets`]).
#[derive(Debug, Clone, Default)]
pub struct NewBuildset {
    pub reason: String,
    /// One request per builder.
    pub builderids: Vec<i64>,
    /// name → (value, source)
    pub properties: BTreeMap<String, (Value, String)>,
    pub sourcestampids: Vec<i64>,
    /// The requests' priority (higher goes first).
    pub priority: i64,
    /// (scheduler id, change ids): the classified changes this buildset
    /// builds, removed in the same transaction.
    pub consumes: Option<(i64, Vec<i64>)>,
    /// Buildbot's `external_idstring` (a dependent scheduler's mark of the
    /// upstream buildset it follows).
    pub external_idstring: Option<String>,
    /// The changes it is made from (`buildset_changes`): a build's changes.
    pub changeids: Vec<i64>,
    /// The build whose `trigger` step made it, and Buildbot's
    /// `parent_relationship` (the triggering scheduler's name).
    pub parent: Option<(i64, String)>,
}

/// A buildset a build triggered, as the triggering build follows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildBuildset {
    pub bsid: i64,
    pub complete: bool,
    pub results: Option<i32>,
    /// Its requests: (request id, builder id, complete).
    pub requests: Vec<(i64, i64, bool)>,
}

fn request_fields(name: &str) -> Option<FieldKind<buildrequests::Column>> {
    use buildrequests::Column as C;
    Some(match name {
        "buildrequestid" => FieldKind::Int(C::Id),
        "buildsetid" => FieldKind::Int(C::Buildsetid),
        "builderid" => FieldKind::Int(C::Builderid),
        "priority" => FieldKind::Int(C::Priority),
        "complete" => FieldKind::Bool(C::Complete),
        "results" => FieldKind::Int(C::Results),
        "submitted_at" => FieldKind::Float(C::SubmittedAt),
        "complete_at" => FieldKind::Float(C::CompleteAt),
        "collapsed_into_buildid" => FieldKind::Int(C::CollapsedInto),
        _ => return None,
    })
}

fn buildset_fields(name: &str) -> Option<FieldKind<buildsets::Column>> {
    use buildsets::Column as C;
    Some(match name {
        "bsid" => FieldKind::Int(C::Id),
        "complete" => FieldKind::Bool(C::Complete),
        "results" => FieldKind::Int(C::Results),
        "submitted_at" => FieldKind::Float(C::SubmittedAt),
        "external_idstring" => FieldKind::Text(C::ExternalIdstring),
        _ => return None,
    })
}

impl Data {
    /// Add a buildset with one request per builder and no source stamp (a
    /// forced build without a codebase). `properties` are stored as
    /// `[value, source]`. Returns the buildset id and builderid → request id.
    pub async fn add_buildset(
        &self,
        reason: &str,
        builderids: &[i64],
        properties: &BTreeMap<String, (Value, String)>,
    ) -> Result<(i64, BTreeMap<i64, i64>), DataError> {
        let added = self
            .add_buildsets(vec![NewBuildset {
                reason: reason.to_string(),
                builderids: builderids.to_vec(),
                properties: properties.clone(),
                ..NewBuildset::default()
            }])
            .await?;
        added
            .into_iter()
            .next()
            .ok_or(DataError::Unexpected("returned no new buildset row"))
    }

    /// Add buildsets, each with its properties, source stamps and one request
    /// per builder, and remove the scheduler classifications each consumes:
    /// all in one transaction and (on SQLite) one trip, so a burst of changes
    /// costs one commit, and a change is built exactly once. Returns, per
    /// buildset, its id and builderid → request id.
    pub async fn add_buildsets(
        &self,
        new: Vec<NewBuildset>,
    ) -> Result<Vec<BuildsetIds>, DataError> {
        let mut batch = Batch::new(self);
        let added = push_buildsets(&mut batch, &new)?;
        let mut rows = self.run_batch(batch).await?;
        self.publish_buildsets(&mut rows, added)
    }

    /// Read the rows of buildsets a batch added ([`push_buildsets`]) and
    /// publish them; returns each buildset's id and builderid → request id.
    pub(crate) fn publish_buildsets(
        &self,
        rows: &mut BatchRows,
        added: Vec<AddedBuildset>,
    ) -> Result<Vec<BuildsetIds>, DataError> {
        let mut out = Vec::with_capacity(added.len());
        for AddedBuildset { buildset, requests } in added {
            let bs: buildsets::Model = rows.one(buildset, "returned no new buildset row")?;
            let requests: Vec<buildrequests::Model> = match requests {
                Some(index) => rows.models(index)?,
                None => Vec::new(),
            };
            self.bus.publish(
                Topic::Buildset {
                    id: bs.id,
                    event: BuildsetEvent::New,
                },
                buildset_json(&bs),
            );
            for br in &requests {
                self.bus.publish(
                    Topic::BuildRequest {
                        id: br.id,
                        event: BuildRequestEvent::New,
                    },
                    request_json(br, None),
                );
            }
            out.push((
                bs.id,
                requests.iter().map(|br| (br.builderid, br.id)).collect(),
            ));
        }
        Ok(out)
    }

    /// Buildsets after `after` (by id, oldest first, at most `limit`): what
    /// a dependent scheduler reads, with their properties and source stamps.
    pub async fn buildsets_after(
        &self,
        after: i64,
        limit: u64,
    ) -> Result<Vec<FinishedBuildset>, DataError> {
        let rows = buildsets::Entity::find()
            .filter(buildsets::Column::Id.gt(after))
            .order_by_asc(buildsets::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?;
        // The page's properties and source stamps in two queries, not two
        // per buildset.
        let ids: Vec<i64> = rows.iter().map(|bs| bs.id).collect();
        let mut properties: BTreeMap<i64, Vec<buildset_properties::Model>> = BTreeMap::new();
        for p in buildset_properties::Entity::find()
            .filter(buildset_properties::Column::Buildsetid.is_in(ids.clone()))
            .all(&self.db)
            .await?
        {
            properties.entry(p.buildsetid).or_default().push(p);
        }
        let mut stamps: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for r in buildset_sourcestamps::Entity::find()
            .filter(buildset_sourcestamps::Column::Buildsetid.is_in(ids))
            .all(&self.db)
            .await?
        {
            stamps
                .entry(r.buildsetid)
                .or_default()
                .push(r.sourcestampid);
        }
        Ok(rows
            .into_iter()
            .map(|bs| FinishedBuildset {
                bsid: bs.id,
                complete: bs.complete,
                results: bs.results,
                external_idstring: bs.external_idstring,
                properties: buildset_properties_from(properties.remove(&bs.id).unwrap_or_default()),
                sourcestampids: stamps.remove(&bs.id).unwrap_or_default(),
            })
            .collect())
    }

    /// The incomplete requests within `scope` in buildsets older than
    /// `before` that build the branch of source stamp `ssid` (same codebase,
    /// repository, project and branch, another revision): what a newer
    /// change supersedes. Returns (request id, claimed).
    pub async fn superseded_requests(
        &self,
        scope: Superseded<'_>,
        ssid: i64,
        before: i64,
    ) -> Result<Vec<(i64, bool)>, DataError> {
        use crate::db::entities::sourcestamps;
        let Some(stamp) = sourcestamps::Entity::find_by_id(ssid).one(&self.db).await? else {
            return Ok(Vec::new());
        };
        let branch = match &stamp.branch {
            Some(b) => sourcestamps::Column::Branch.eq(b.as_str()),
            None => sourcestamps::Column::Branch.is_null(),
        };
        let same_branch: Vec<i64> = sourcestamps::Entity::find()
            .filter(sourcestamps::Column::Codebase.eq(stamp.codebase.as_str()))
            .filter(sourcestamps::Column::Repository.eq(stamp.repository.as_str()))
            .filter(sourcestamps::Column::Project.eq(stamp.project.as_str()))
            .filter(branch)
            .filter(sourcestamps::Column::Id.ne(ssid))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect();
        if same_branch.is_empty() {
            return Ok(Vec::new());
        }
        let bsids: Vec<i64> = buildset_sourcestamps::Entity::find()
            .filter(buildset_sourcestamps::Column::Sourcestampid.is_in(same_branch))
            .filter(buildset_sourcestamps::Column::Buildsetid.lt(before))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|r| r.buildsetid)
            .collect();
        if bsids.is_empty() {
            return Ok(Vec::new());
        }
        let mut requests =
            buildrequests::Entity::find().filter(buildrequests::Column::Complete.eq(false));
        match scope {
            Superseded::Scheduler(scheduler) => {
                let mine = json!([scheduler, "Scheduler"]).to_string();
                let bsids: Vec<i64> = buildset_properties::Entity::find()
                    .filter(buildset_properties::Column::Buildsetid.is_in(bsids))
                    .filter(buildset_properties::Column::PropertyName.eq("scheduler"))
                    .filter(buildset_properties::Column::PropertyValue.eq(mine))
                    .all(&self.db)
                    .await?
                    .into_iter()
                    .map(|p| p.buildsetid)
                    .collect();
                requests = requests.filter(buildrequests::Column::Buildsetid.is_in(bsids));
            }
            Superseded::Builder(builderid) => {
                requests = requests
                    .filter(buildrequests::Column::Buildsetid.is_in(bsids))
                    .filter(buildrequests::Column::Builderid.eq(builderid));
            }
        }
        let requests = requests.all(&self.db).await?;
        let claimed: std::collections::BTreeSet<i64> = buildrequest_claims::Entity::find()
            .filter(buildrequest_claims::Column::Brid.is_in(requests.iter().map(|r| r.id)))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|c| c.brid)
            .collect();
        Ok(requests
            .into_iter()
            .map(|r| (r.id, claimed.contains(&r.id)))
            .collect())
    }

    /// Whether a buildset with this `external_idstring` exists.
    pub async fn buildset_marked(&self, external_idstring: &str) -> Result<bool, DataError> {
        Ok(buildsets::Entity::find()
            .filter(buildsets::Column::ExternalIdstring.eq(external_idstring))
            .one(&self.db)
            .await?
            .is_some())
    }

    /// The properties a buildset was submitted with.
    pub async fn buildset_properties(
        &self,
        buildsetid: i64,
    ) -> Result<BTreeMap<String, (Value, String)>, DataError> {
        let rows = buildset_properties::Entity::find()
            .filter(buildset_properties::Column::Buildsetid.eq(buildsetid))
            .all(&self.db)
            .await?;
        Ok(buildset_properties_from(rows))
    }

    /// The reason a buildset was submitted with.
    pub async fn buildset_reason(&self, buildsetid: i64) -> Result<String, DataError> {
        Ok(buildsets::Entity::find_by_id(buildsetid)
            .one(&self.db)
            .await?
            .map(|b| b.reason)
            .unwrap_or_default())
    }

    /// Incomplete, unclaimed requests for `builderids`, highest priority and
    /// oldest first: up to `limit` of them, after skipping `offset`.
    pub async fn pending_requests(
        &self,
        builderids: &[i64],
        offset: u64,
        limit: u64,
    ) -> Result<Vec<PendingRequest>, DataError> {
        Ok(buildrequests::Entity::find()
            .filter(buildrequests::Column::Complete.eq(false))
            .filter(buildrequests::Column::Builderid.is_in(builderids.iter().copied()))
            .filter(buildrequests::Column::Id.not_in_subquery(claimed_ids()))
            .order_by_desc(buildrequests::Column::Priority)
            .order_by_asc(buildrequests::Column::SubmittedAt)
            .order_by_asc(buildrequests::Column::Id)
            .offset(offset)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(PendingRequest::from)
            .collect())
    }

    /// Claim a request for this master; false when another claim got there first.
    pub async fn claim_request(&self, request: &mut PendingRequest) -> Result<bool, DataError> {
        let claim = buildrequest_claims::Model {
            brid: request.brid,
            masterid: self.masterid,
            claimed_at: now(),
        };
        let result = buildrequest_claims::Entity::insert(buildrequest_claims::ActiveModel::from(
            claim.clone(),
        ))
        .exec(&self.db)
        .await;
        match result {
            Ok(_) => {
                self.bus.publish(
                    Topic::BuildRequest {
                        id: request.brid,
                        event: BuildRequestEvent::Claimed,
                    },
                    request_json(&request.row, Some(&claim)),
                );
                request.claim = Some(claim);
                Ok(true)
            }
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Give a request back to the queue (its build ended RETRY).
    pub async fn unclaim_request(&self, brid: i64) -> Result<(), DataError> {
        buildrequest_claims::Entity::delete_many()
            .filter(buildrequest_claims::Column::Brid.eq(brid))
            .exec(&self.db)
            .await?;
        self.publish_request(brid, BuildRequestEvent::Unclaimed)
            .await
    }

    /// A build for the request finished with `results`; completes the buildset
    /// too when it was its last open request.
    pub async fn complete_request(
        &self,
        request: &PendingRequest,
        results: i32,
    ) -> Result<(), DataError> {
        let mut batch = Batch::new(self);
        let completion = push_completion(&mut batch, request, results, now());
        let mut rows = self.run_batch(batch).await?;
        self.publish_completion(&mut rows, completion, request)
    }

    /// Publishes what a batch with [`push_completion`]'s statements changed:
    /// the request complete and, if it was the last one, its buildset.
    pub(crate) fn publish_completion(
        &self,
        rows: &mut BatchRows,
        completion: Completion,
        request: &PendingRequest,
    ) -> Result<(), DataError> {
        let completed: Vec<buildrequests::Model> = rows.models(completion.request)?;
        for br in &completed {
            self.bus.publish(
                Topic::BuildRequest {
                    id: br.id,
                    event: BuildRequestEvent::Complete,
                },
                request_json(br, request.claim.as_ref()),
            );
        }
        let buildsets: Vec<buildsets::Model> = rows.models(completion.buildset)?;
        for bs in buildsets {
            self.bus.publish(
                Topic::Buildset {
                    id: bs.id,
                    event: BuildsetEvent::Complete,
                },
                buildset_json(&bs),
            );
        }
        Ok(())
    }

    /// Cancel a request that has not started: claim it so no master starts it,
    /// then complete it CANCELLED. `Ok(false)` when it was already claimed
    /// (a build is running: stop that instead) or complete.
    pub async fn cancel_request(&self, brid: i64) -> Result<bool, DataError> {
        let Some(br) = buildrequests::Entity::find_by_id(brid)
            .one(&self.db)
            .await?
        else {
            return Err(DataError::NotFound(format!("build request {brid}")));
        };
        let mut request = PendingRequest::from(br);
        if request.row.complete || !self.claim_request(&mut request).await? {
            return Ok(false);
        }
        self.complete_request(&request, crate::results::CANCELLED)
            .await?;
        Ok(true)
    }

    /// The buildsets build `buildid` triggered, with their requests' state.
    pub async fn child_buildsets(&self, buildid: i64) -> Result<Vec<ChildBuildset>, DataError> {
        let sets = buildsets::Entity::find()
            .filter(buildsets::Column::ParentBuildid.eq(buildid))
            .order_by_asc(buildsets::Column::Id)
            .all(&self.db)
            .await?;
        let ids: Vec<i64> = sets.iter().map(|s| s.id).collect();
        let requests = if ids.is_empty() {
            Vec::new()
        } else {
            buildrequests::Entity::find()
                .filter(buildrequests::Column::Buildsetid.is_in(ids))
                .order_by_asc(buildrequests::Column::Id)
                .all(&self.db)
                .await?
        };
        Ok(sets
            .into_iter()
            .map(|bs| ChildBuildset {
                bsid: bs.id,
                complete: bs.complete,
                results: bs.results,
                requests: requests
                    .iter()
                    .filter(|r| r.buildsetid == bs.id)
                    .map(|r| (r.id, r.builderid, r.complete))
                    .collect(),
            })
            .collect())
    }

    /// Cancel the requests not yet started of buildsets whose parent build
    /// ended RETRY (its master stopped while it waited for them): the parent
    /// runs again and triggers its own, so these would be orphans. `parent`:
    /// only that build's (when it ends RETRY); `None`: every build's (at
    /// start). Only the open triggered buildsets and their parents' rows are
    /// read. Returns the requests cancelled.
    pub async fn cancel_orphaned_children(
        &self,
        parent: Option<i64>,
    ) -> Result<Vec<i64>, DataError> {
        use crate::db::entities::builds;
        let mut open = buildsets::Entity::find().filter(buildsets::Column::Complete.eq(false));
        open = match parent {
            Some(buildid) => open.filter(buildsets::Column::ParentBuildid.eq(buildid)),
            None => open.filter(buildsets::Column::ParentBuildid.is_not_null()),
        };
        let open = open.all(&self.db).await?;
        let parents: BTreeSet<i64> = open.iter().filter_map(|bs| bs.parent_buildid).collect();
        if parents.is_empty() {
            return Ok(Vec::new());
        }
        let retried: BTreeSet<i64> = builds::Entity::find()
            .filter(builds::Column::Id.is_in(parents))
            .filter(builds::Column::Results.eq(crate::results::RETRY))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|b| b.id)
            .collect();
        let sets: Vec<i64> = open
            .into_iter()
            .filter(|bs| bs.parent_buildid.is_some_and(|p| retried.contains(&p)))
            .map(|bs| bs.id)
            .collect();
        if sets.is_empty() {
            return Ok(Vec::new());
        }
        let pending = buildrequests::Entity::find()
            .filter(buildrequests::Column::Buildsetid.is_in(sets))
            .filter(buildrequests::Column::Complete.eq(false))
            .filter(buildrequests::Column::Id.not_in_subquery(claimed_ids()))
            .all(&self.db)
            .await?;
        let mut cancelled = Vec::new();
        for br in pending {
            if self.cancel_request(br.id).await? {
                cancelled.push(br.id);
            }
        }
        Ok(cancelled)
    }

    /// The builds of the buildsets build `buildid` triggered
    /// (`/builds/N/triggered_builds`).
    pub async fn triggered_builds(
        &self,
        buildid: i64,
        q: ListQuery,
    ) -> Result<Vec<Value>, DataError> {
        let bsids: Vec<i64> = buildsets::Entity::find()
            .filter(buildsets::Column::ParentBuildid.eq(buildid))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|bs| bs.id)
            .collect();
        Ok(self
            .builds_of_buildsets(&bsids, q, false)
            .await?
            .into_iter()
            .map(|(_, b)| b)
            .collect())
    }

    /// The build whose `trigger` step made the buildset of request `brid`.
    pub async fn parent_of_request(&self, brid: i64) -> Result<Option<i64>, DataError> {
        let Some(br) = buildrequests::Entity::find_by_id(brid)
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        Ok(buildsets::Entity::find_by_id(br.buildsetid)
            .one(&self.db)
            .await?
            .and_then(|bs| bs.parent_buildid))
    }

    /// Give a pending request (not complete, not claimed) another priority;
    /// false when it is not pending. The distributor orders by priority at
    /// its next pass.
    pub async fn set_request_priority(&self, brid: i64, priority: i64) -> Result<bool, DataError> {
        let Some(br) = buildrequests::Entity::find_by_id(brid)
            .one(&self.db)
            .await?
        else {
            return Err(DataError::NotFound(format!("build request {brid}")));
        };
        if br.complete {
            return Ok(false);
        }
        let updated = buildrequests::Entity::update_many()
            .col_expr(buildrequests::Column::Priority, Expr::value(priority))
            .filter(buildrequests::Column::Id.eq(brid))
            .filter(buildrequests::Column::Complete.eq(false))
            .filter(buildrequests::Column::Id.not_in_subquery(claimed_ids()))
            .exec(&self.db)
            .await?;
        Ok(updated.rows_affected == 1)
    }

    /// A new buildset asking the builder of `brid` to build it again, with the
    /// same properties; returns the buildset id and the new request id.
    pub async fn resubmit_request(&self, brid: i64, reason: &str) -> Result<(i64, i64), DataError> {
        let Some(br) = buildrequests::Entity::find_by_id(brid)
            .one(&self.db)
            .await?
        else {
            return Err(DataError::NotFound(format!("build request {brid}")));
        };
        let mut properties = self.buildset_properties(br.buildsetid).await?;
        properties.insert("reason".into(), (reason.into(), "Rebuild".into()));
        let sourcestampids = buildset_sourcestamps::Entity::find()
            .filter(buildset_sourcestamps::Column::Buildsetid.eq(br.buildsetid))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| row.sourcestampid)
            .collect();
        let changeids = buildset_changes::Entity::find()
            .filter(buildset_changes::Column::Buildsetid.eq(br.buildsetid))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| row.changeid)
            .collect();
        let priority = br.priority.into();
        let added = self
            .add_buildsets(vec![NewBuildset {
                reason: reason.to_string(),
                builderids: vec![br.builderid],
                properties,
                sourcestampids,
                priority,
                consumes: None,
                external_idstring: None,
                changeids,
                parent: None,
            }])
            .await?;
        let (bsid, brids) = added
            .into_iter()
            .next()
            .ok_or(DataError::Unexpected("returned no new buildset row"))?;
        Ok((bsid, brids[&br.builderid]))
    }

    async fn publish_request(&self, brid: i64, event: BuildRequestEvent) -> Result<(), DataError> {
        if let Some(br) = buildrequests::Entity::find_by_id(brid)
            .one(&self.db)
            .await?
        {
            let claim = buildrequest_claims::Entity::find_by_id(brid)
                .one(&self.db)
                .await?;
            self.bus.publish(
                Topic::BuildRequest { id: brid, event },
                request_json(&br, claim.as_ref()),
            );
        }
        Ok(())
    }

    pub async fn list_buildrequests(&self, q: &ListQuery) -> Result<(Vec<Value>, u64), DataError> {
        let mut q = q.clone();
        // `claimed` is derived from the claims table, not a column.
        let claimed_filter = take_bool_filter(&mut q, "claimed")?;
        let mut select = apply(buildrequests::Entity::find(), &q, &request_fields)?;
        select = match claimed_filter {
            Some(true) => select.filter(buildrequests::Column::Id.in_subquery(claimed_ids())),
            Some(false) => select.filter(buildrequests::Column::Id.not_in_subquery(claimed_ids())),
            None => select,
        };
        let (rows, total) = fetch_page(
            &self.db,
            select,
            &q,
            (buildrequests::Column::Id, Order::Asc),
        )
        .await?;
        let claims: HashMap<i64, buildrequest_claims::Model> = buildrequest_claims::Entity::find()
            .filter(buildrequest_claims::Column::Brid.is_in(rows.iter().map(|r| r.id)))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|c| (c.brid, c))
            .collect();
        Ok((
            rows.iter()
                .map(|r| request_json(r, claims.get(&r.id)))
                .collect(),
            total,
        ))
    }

    /// The builds of these buildsets' requests (under `q`, which may page and
    /// filter them), each with its buildset's id.
    pub async fn builds_of_buildsets(
        &self,
        bsids: &[i64],
        q: ListQuery,
        with_properties: bool,
    ) -> Result<Vec<(i64, Value)>, DataError> {
        if bsids.is_empty() {
            return Ok(Vec::new());
        }
        let requests = ListQuery::default().with_any("buildsetid", bsids);
        let (requests, _) = self.list_buildrequests(&requests).await?;
        let bs_of: BTreeMap<i64, i64> = requests
            .iter()
            .filter_map(|r| Some((r["buildrequestid"].as_i64()?, r["buildsetid"].as_i64()?)))
            .collect();
        if bs_of.is_empty() {
            return Ok(Vec::new());
        }
        let q = q.with_any("buildrequestid", bs_of.keys());
        let (builds, _) = self.list_builds(&q, with_properties).await?;
        Ok(builds
            .into_iter()
            .filter_map(|b| {
                let bsid = *bs_of.get(&b["buildrequestid"].as_i64()?)?;
                Some((bsid, b))
            })
            .collect())
    }

    pub async fn list_buildsets(&self, q: &ListQuery) -> Result<(Vec<Value>, u64), DataError> {
        let select = apply(buildsets::Entity::find(), q, &buildset_fields)?;
        let select = cut_long_text(select, &[buildsets::Column::Reason], q);
        let (rows, total) =
            fetch_page(&self.db, select, q, (buildsets::Column::Id, Order::Asc)).await?;
        let mut out: Vec<Value> = rows.iter().map(buildset_json).collect();
        mark_cut(&mut out, &["reason"], q);
        Ok((out, total))
    }
}

fn take_bool_filter(q: &mut ListQuery, field: &str) -> Result<Option<bool>, QueryError> {
    let Some(pos) = q.filters.iter().position(|f| f.field == field) else {
        return Ok(None);
    };
    let f = q.filters.remove(pos);
    let want = match f.values[0].as_str() {
        "true" | "1" => true,
        "false" | "0" => false,
        other => {
            return Err(QueryError::BadValue {
                field: field.to_string(),
                expected: "true or false",
                value: other.to_string(),
            });
        }
    };
    match f.op {
        Op::Eq => Ok(Some(want)),
        Op::Ne => Ok(Some(!want)),
        _ => Err(QueryError::EqualityOnly(field.to_string())),
    }
}

/// `SELECT brid FROM buildrequest_claims`, for "is (not) claimed" filters.
pub(crate) fn claimed_ids() -> sea_orm::sea_query::SelectStatement {
    sea_orm::sea_query::Query::select()
        .column(buildrequest_claims::Column::Brid)
        .from(buildrequest_claims::Entity)
        .to_owned()
}

/// Statements of a batch that added one buildset, to find its rows.
pub(crate) struct AddedBuildset {
    buildset: StatementIndex,
    requests: Option<StatementIndex>,
}

/// Push the statements that add these buildsets (each with its properties,
/// source stamps and requests, and the removal of the classifications it
/// consumes) onto `batch`; [`Data::publish_buildsets`] reads them back.
pub(crate) fn push_buildsets(
    batch: &mut Batch,
    new: &[NewBuildset],
) -> Result<Vec<AddedBuildset>, DataError> {
    use buildrequests::Column as R;
    use buildset_properties::Column as P;
    let submitted_at = now();
    let mut added = Vec::with_capacity(new.len());
    for set in new {
        // The properties, source stamps and requests name the buildset
        // by `last_id`, so they follow its insert.
        let buildset = batch.push(
            Query::insert()
                .into_table(buildsets::Entity)
                .columns([
                    buildsets::Column::Reason,
                    buildsets::Column::SubmittedAt,
                    buildsets::Column::Complete,
                    buildsets::Column::ExternalIdstring,
                    buildsets::Column::ParentBuildid,
                    buildsets::Column::ParentRelationship,
                ])
                .values([
                    set.reason.as_str().into(),
                    submitted_at.into(),
                    false.into(),
                    set.external_idstring.clone().into(),
                    set.parent.as_ref().map(|(b, _)| *b).into(),
                    set.parent.as_ref().map(|(_, r)| r.clone()).into(),
                ])?
                .returning_all(),
        );
        let bsid = batch.last_id("buildsets");
        batch.push_report_event(super::reports::ReportEvent::BuildsetNew, bsid.clone());
        if !set.properties.is_empty() {
            let mut insert = Query::insert();
            insert.into_table(buildset_properties::Entity).columns([
                P::Buildsetid,
                P::PropertyName,
                P::PropertyValue,
            ]);
            for (name, (value, source)) in &set.properties {
                insert.values([
                    bsid.clone(),
                    name.as_str().into(),
                    json!([value, source]).to_string().into(),
                ])?;
            }
            batch.push(&insert);
        }
        if !set.sourcestampids.is_empty() {
            use buildset_sourcestamps::Column as S;
            let mut insert = Query::insert();
            insert
                .into_table(buildset_sourcestamps::Entity)
                .columns([S::Buildsetid, S::Sourcestampid]);
            for &ssid in &set.sourcestampids {
                insert.values([bsid.clone(), ssid.into()])?;
            }
            batch.push(&insert);
        }
        if !set.changeids.is_empty() {
            use buildset_changes::Column as C;
            let mut insert = Query::insert();
            insert
                .into_table(buildset_changes::Entity)
                .columns([C::Buildsetid, C::Changeid]);
            for &changeid in &set.changeids {
                insert.values([bsid.clone(), changeid.into()])?;
            }
            batch.push(&insert);
        }
        let requests = (!set.builderids.is_empty()).then(|| {
            let mut insert = Query::insert();
            insert
                .into_table(buildrequests::Entity)
                .columns([
                    R::Buildsetid,
                    R::Builderid,
                    R::Priority,
                    R::Complete,
                    R::SubmittedAt,
                    R::WaitedFor,
                ])
                .returning_all();
            for &builderid in &set.builderids {
                insert.values_panic([
                    bsid.clone(),
                    builderid.into(),
                    set.priority.into(),
                    false.into(),
                    submitted_at.into(),
                    false.into(),
                ]);
            }
            batch.push(&insert)
        });
        if let Some((schedulerid, changeids)) = &set.consumes
            && !changeids.is_empty()
        {
            use scheduler_changes::Column as C;
            batch.push(
                Query::delete()
                    .from_table(scheduler_changes::Entity)
                    .and_where(Expr::col(C::Schedulerid).eq(*schedulerid))
                    .and_where(Expr::col(C::Changeid).is_in(changeids.iter().copied())),
            );
        }
        added.push(AddedBuildset { buildset, requests });
    }
    Ok(added)
}

/// True when an insert failed on a unique or primary key constraint.
pub fn is_unique_violation(e: &sea_orm::DbErr) -> bool {
    matches!(
        e.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

fn buildset_json(bs: &buildsets::Model) -> Value {
    json!({
        "bsid": bs.id,
        "external_idstring": bs.external_idstring,
        "reason": bs.reason,
        "submitted_at": bs.submitted_at,
        "complete": bs.complete,
        "complete_at": bs.complete_at,
        "results": bs.results,
        "parent_buildid": bs.parent_buildid,
        "parent_relationship": bs.parent_relationship,
        // A rebuild is a new buildset for the request; which build it
        // rebuilt is in its reason, not stored apart.
        "rebuilt_buildid": null,
        "sourcestamps": [],
    })
}

fn request_json(br: &buildrequests::Model, claim: Option<&buildrequest_claims::Model>) -> Value {
    json!({
        "buildrequestid": br.id,
        "buildsetid": br.buildsetid,
        "builderid": br.builderid,
        "priority": br.priority,
        "claimed": claim.is_some(),
        "claimed_at": claim.map(|c| c.claimed_at),
        "claimed_by_masterid": claim.map(|c| c.masterid),
        "complete": br.complete,
        "results": br.results,
        "submitted_at": br.submitted_at,
        "complete_at": br.complete_at,
        "waited_for": br.waited_for,
        "collapsed_into_buildid": br.collapsed_into,
        // Buildbot's shape: shown only when asked for (its `property=`).
        "properties": null,
    })
}

/// Where [`push_completion`]'s statements are in their batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completion {
    request: StatementIndex,
    buildset: StatementIndex,
}

/// Adds the statements that complete `request` with `results` at `at`, and its
/// buildset with the worst result of its requests when no other request of it
/// is still open. In the batch's transaction, so nobody sees the request
/// complete while its buildset still looks open.
pub(crate) fn push_completion(
    batch: &mut Batch,
    request: &PendingRequest,
    results: i32,
    at: f64,
) -> Completion {
    use buildrequests::Column as R;
    use buildsets::Column as B;
    let bsid = request.buildsetid;
    // Lock the buildset's row first. On PostgreSQL two builds of one
    // buildset ending at once would otherwise each see the other's request
    // still open and neither complete the buildset; this way the second
    // waits for the first to commit, and its later statements see it.
    batch.push(
        Query::update()
            .table(buildsets::Entity)
            .value(B::Complete, Expr::col(B::Complete))
            .and_where(Expr::col(B::Id).eq(bsid)),
    );
    let request_index = batch.push(
        Query::update()
            .table(buildrequests::Entity)
            .values([
                (R::Complete, true.into()),
                (R::Results, results.into()),
                (R::CompleteAt, at.into()),
            ])
            .and_where(Expr::col(R::Id).eq(request.brid))
            .returning_all(),
    );
    let open = Query::select()
        .expr(Expr::val(1))
        .from(buildrequests::Entity)
        .and_where(Expr::col(R::Buildsetid).eq(bsid))
        .and_where(Expr::col(R::Complete).eq(false))
        .to_owned();
    let buildset_index = batch.push(
        Query::update()
            .table(buildsets::Entity)
            .values([
                (B::Complete, true.into()),
                (B::Results, worst_result_sql(bsid)),
                (B::CompleteAt, at.into()),
            ])
            .and_where(Expr::col(B::Id).eq(bsid))
            .and_where(Expr::col(B::Complete).eq(false))
            .and_where(Expr::exists(open).not())
            .returning_all(),
    );
    // For the reporters, if that completed it (by this batch: only it
    // completes at `at`, holding the buildset's row).
    batch.push_report_event_when(
        ReportEvent::BuildsetComplete,
        bsid,
        Query::select()
            .expr(Expr::val(1))
            .from(buildsets::Entity)
            .and_where(Expr::col(B::Id).eq(bsid))
            .and_where(Expr::col(B::Complete).eq(true))
            .and_where(Expr::col(B::CompleteAt).eq(at))
            .to_owned(),
    );
    Completion {
        request: request_index,
        buildset: buildset_index,
    }
}

/// The worst result of the requests of buildset `bsid`, in SQL: the highest
/// rank in Buildbot's order ([`crate::results::ORDER`]), never better than
/// SUCCESS, as folding from SUCCESS with [`crate::results::worst`] gives. NULL
/// and unknown results rank lowest.
fn worst_result_sql(bsid: i64) -> Expr {
    use crate::results::{ORDER, SUCCESS, rank};
    let mut rank_of_results = String::from("CASE results");
    for (r, result) in ORDER.iter().enumerate() {
        rank_of_results.push_str(&format!(" WHEN {result} THEN {r}"));
    }
    rank_of_results.push_str(" ELSE 0 END");
    let mut sql = format!(
        "CASE (SELECT MAX({rank_of_results}) FROM buildrequests WHERE buildsetid = {bsid})"
    );
    for (r, result) in ORDER.iter().enumerate().skip(rank(SUCCESS) + 1) {
        sql.push_str(&format!(" WHEN {r} THEN {result}"));
    }
    sql.push_str(&format!(" ELSE {SUCCESS} END"));
    // Only integers go into this text (a buildset id from the database and
    // result codes), so it needs no bound values.
    Expr::cust(sql)
}

/// Stored buildset properties (`[value, source]`) as name → (value, source);
/// a malformed one is left out.
pub(crate) fn buildset_properties_from(
    rows: Vec<buildset_properties::Model>,
) -> BTreeMap<String, (Value, String)> {
    let mut out = BTreeMap::new();
    for r in rows {
        if let Ok(Value::Array(pair)) = serde_json::from_str::<Value>(&r.property_value)
            && pair.len() == 2
        {
            let source = pair[1].as_str().unwrap_or("").to_string();
            out.insert(r.property_name, (pair[0].clone(), source));
        }
    }
    out
}
