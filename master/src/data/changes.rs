//! The `changes` collection (commits that change sources and hooks report)
//! and the source stamps builds are made from, read for the API, the build
//! page's "sources" and the console view.
//!
//! A change comes in through [`Data::add_change`] (`moonbot sendchange`),
//! [`Data::add_delivered_changes`] (forge hooks, with the delivery id) or
//! [`Data::add_polled_changes`] (the git poller, with its position): the
//! change, its files, its properties and its source stamp are one batch,
//! and `changes/N/new` is published from the rows it returned.

use super::batch::{Batch, BatchRows, StatementIndex};
use super::buildsets::is_unique_violation;
use super::query::{FieldKind, ListQuery, apply, cut_long_text, fetch_page, mark_cut};
use super::state::push_set_state;
use super::{Data, DataError};
use crate::db::entities::{
    buildset_sourcestamps, change_files, change_hook_deliveries, change_properties, changes,
    sourcestamps,
};
use crate::mq::Topic;
use crate::mq::topic::ChangeEvent;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query, SimpleExpr, SubQueryStatement};
use sea_orm::{ColumnTrait, EntityTrait, Order, QueryFilter, QueryOrder, QueryTrait};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// A change as a source reports it, before it is stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewChange {
    pub author: String,
    pub committer: Option<String>,
    pub comments: String,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub revlink: Option<String>,
    /// When the change was made (seconds since 1970); now when not known.
    pub when_timestamp: Option<f64>,
    pub category: Option<String>,
    pub repository: String,
    pub codebase: String,
    pub project: String,
    pub files: Vec<String>,
    /// Property values; stored with the source `Change`, as Buildbot does.
    pub properties: BTreeMap<String, Value>,
}

/// The statements of one change in a batch, to read its rows back.
struct PushedChange {
    change: StatementIndex,
    sourcestamp: StatementIndex,
    files: Vec<String>,
    properties: BTreeMap<String, Value>,
}

/// Push the statements that store a change, its files, its properties and
/// (unless it exists) its source stamp onto `batch`: one trip to SQLite for
/// all of them, and the rows come back to publish without reading again.
fn push_change(batch: &mut Batch, change: NewChange) -> Result<PushedChange, DataError> {
    use changes::Column as C;
    let when = change.when_timestamp.unwrap_or_else(super::now);
    let (sourcestamp, by_hash) = push_sourcestamp(batch, &change)?;
    let stored = batch.push(
        Query::insert()
            .into_table(changes::Entity)
            .columns([
                C::Author,
                C::Committer,
                C::Comments,
                C::Branch,
                C::Revision,
                C::Revlink,
                C::WhenTimestamp,
                C::Category,
                C::Repository,
                C::Codebase,
                C::Project,
                C::Sourcestampid,
            ])
            .values([
                change.author.into(),
                change.committer.into(),
                change.comments.into(),
                change.branch.into(),
                change.revision.into(),
                change.revlink.into(),
                when.into(),
                change.category.into(),
                change.repository.into(),
                change.codebase.into(),
                change.project.into(),
                by_hash,
            ])?
            .returning_all(),
    );
    let changeid = batch.last_id("changes");
    if !change.files.is_empty() {
        use change_files::Column as F;
        let mut insert = Query::insert();
        insert
            .into_table(change_files::Entity)
            .columns([F::Changeid, F::Filename]);
        for file in &change.files {
            insert.values([changeid.clone(), file.as_str().into()])?;
        }
        batch.push(&insert);
    }
    if !change.properties.is_empty() {
        use change_properties::Column as P;
        let mut insert = Query::insert();
        insert.into_table(change_properties::Entity).columns([
            P::Changeid,
            P::PropertyName,
            P::PropertyValue,
        ]);
        for (name, value) in &change.properties {
            insert.values([
                changeid.clone(),
                name.as_str().into(),
                json!([value, "Change"]).to_string().into(),
            ])?;
        }
        batch.push(&insert);
    }
    Ok(PushedChange {
        change: stored,
        sourcestamp,
        files: change.files,
        properties: change.properties,
    })
}

/// Read back the changes a batch stored, in the API's shape.
fn stored_changes(
    rows: &mut BatchRows,
    pushed: Vec<PushedChange>,
) -> Result<Vec<Value>, DataError> {
    let mut out = Vec::with_capacity(pushed.len());
    for p in pushed {
        let row: changes::Model = rows.one(p.change, "returned no new change row")?;
        let stamp: Option<sourcestamps::Model> = rows.models(p.sourcestamp)?.into_iter().next();
        let mut shown = change_json(&row);
        shown["files"] = json!(p.files);
        shown["properties"] = Value::Object(
            p.properties
                .into_iter()
                .map(|(name, value)| (name, json!([value, "Change"])))
                .collect(),
        );
        shown["sourcestamp"] = stamp.as_ref().map_or(Value::Null, sourcestamp_json);
        out.push(shown);
    }
    Ok(out)
}

/// Push "make the source stamp of `change`'s attributes unless it exists,
/// then read it" onto `batch`. Returns the read's statement and a subquery
/// naming the stamp's id for a later statement of the batch.
fn push_sourcestamp(
    batch: &mut Batch,
    change: &NewChange,
) -> Result<(StatementIndex, SimpleExpr), DataError> {
    use sourcestamps::Column as S;
    let ss_hash = sourcestamp_hash(change);
    batch.push(
        Query::insert()
            .into_table(sourcestamps::Entity)
            .columns([
                S::SsHash,
                S::Branch,
                S::Revision,
                S::Repository,
                S::Codebase,
                S::Project,
                S::CreatedAt,
            ])
            .values([
                ss_hash.as_str().into(),
                change.branch.clone().into(),
                change.revision.clone().into(),
                change.repository.as_str().into(),
                change.codebase.as_str().into(),
                change.project.as_str().into(),
                super::now().into(),
            ])?
            .on_conflict(OnConflict::column(S::SsHash).do_nothing().to_owned()),
    );
    let read = batch.push(
        &sourcestamps::Entity::find()
            .filter(S::SsHash.eq(ss_hash.as_str()))
            .into_query(),
    );
    let id = Query::select()
        .column(S::Id)
        .from(sourcestamps::Entity)
        .and_where(Expr::col(S::SsHash).eq(ss_hash.as_str()))
        .to_owned();
    Ok((
        read,
        SimpleExpr::SubQuery(None, Box::new(SubQueryStatement::SelectStatement(id))),
    ))
}

/// Source stamps are shared: one row per (codebase, repository, branch,
/// revision, project), found by this hash of them.
fn sourcestamp_hash(c: &NewChange) -> String {
    let key = json!([c.codebase, c.repository, c.branch, c.revision, c.project]);
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        key.to_string().as_bytes(),
    ))
}

fn fields(name: &str) -> Option<FieldKind<changes::Column>> {
    use changes::Column as C;
    Some(match name {
        "changeid" => FieldKind::Int(C::Id),
        "author" => FieldKind::Text(C::Author),
        "branch" => FieldKind::Text(C::Branch),
        "revision" => FieldKind::Text(C::Revision),
        "repository" => FieldKind::Text(C::Repository),
        "project" => FieldKind::Text(C::Project),
        "codebase" => FieldKind::Text(C::Codebase),
        "when_timestamp" => FieldKind::Float(C::WhenTimestamp),
        "sourcestampid" => FieldKind::Int(C::Sourcestampid),
        _ => return None,
    })
}

fn sourcestamp_fields(name: &str) -> Option<FieldKind<sourcestamps::Column>> {
    use sourcestamps::Column as C;
    Some(match name {
        "ssid" => FieldKind::Int(C::Id),
        "branch" => FieldKind::Text(C::Branch),
        "revision" => FieldKind::Text(C::Revision),
        "repository" => FieldKind::Text(C::Repository),
        "project" => FieldKind::Text(C::Project),
        "codebase" => FieldKind::Text(C::Codebase),
        "created_at" => FieldKind::Float(C::CreatedAt),
        _ => return None,
    })
}

fn change_json(c: &changes::Model) -> Value {
    json!({
        "changeid": c.id,
        "author": c.author,
        "committer": c.committer,
        "comments": c.comments,
        "branch": c.branch,
        "revision": c.revision,
        "revlink": c.revlink,
        "when_timestamp": c.when_timestamp,
        "category": c.category,
        "repository": c.repository,
        "codebase": c.codebase,
        "project": c.project,
        "sourcestampid": c.sourcestampid,
        "parent_changeids": c.parent_changeid.into_iter().collect::<Vec<_>>(),
    })
}

fn sourcestamp_json(s: &sourcestamps::Model) -> Value {
    json!({
        "ssid": s.id,
        "branch": s.branch,
        "revision": s.revision,
        "repository": s.repository,
        "codebase": s.codebase,
        "project": s.project,
        "created_at": s.created_at,
        "patch": null,
    })
}

impl Data {
    /// Changes, newest first unless the query orders otherwise, in
    /// Buildbot's shape: with their `files`, `properties` and `sourcestamp`.
    pub async fn list_changes(&self, q: &ListQuery) -> Result<(Vec<Value>, u64), DataError> {
        let select = apply(changes::Entity::find(), q, &fields)?;
        let select = cut_long_text(select, &[changes::Column::Comments], q);
        let (rows, total) =
            fetch_page(&self.db, select, q, (changes::Column::Id, Order::Desc)).await?;
        let mut out = self.changes_json(&rows).await?;
        mark_cut(&mut out, &["comments"], q);
        Ok((out, total))
    }

    /// Changes as the API shows them: the page's files, properties and
    /// source stamps in three queries, not three per change.
    async fn changes_json(&self, rows: &[changes::Model]) -> Result<Vec<Value>, DataError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let mut files: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
        for f in change_files::Entity::find()
            .filter(change_files::Column::Changeid.is_in(ids.clone()))
            .all(&self.db)
            .await?
        {
            files.entry(f.changeid).or_default().push(f.filename.into());
        }
        let mut properties: BTreeMap<i64, Map<String, Value>> = BTreeMap::new();
        for p in change_properties::Entity::find()
            .filter(change_properties::Column::Changeid.is_in(ids))
            .all(&self.db)
            .await?
        {
            let pair: Value = serde_json::from_str(&p.property_value).unwrap_or(Value::Null);
            properties
                .entry(p.changeid)
                .or_default()
                .insert(p.property_name, pair);
        }
        let ssids: Vec<i64> = rows.iter().filter_map(|r| r.sourcestampid).collect();
        let stamps: BTreeMap<i64, Value> = sourcestamps::Entity::find()
            .filter(sourcestamps::Column::Id.is_in(ssids))
            .all(&self.db)
            .await?
            .iter()
            .map(|s| (s.id, sourcestamp_json(s)))
            .collect();
        Ok(rows
            .iter()
            .map(|r| {
                let mut c = change_json(r);
                c["files"] = Value::Array(files.remove(&r.id).unwrap_or_default());
                c["properties"] = Value::Object(properties.remove(&r.id).unwrap_or_default());
                c["sourcestamp"] = r
                    .sourcestampid
                    .and_then(|id| stamps.get(&id).cloned())
                    .unwrap_or(Value::Null);
                c
            })
            .collect())
    }

    /// Store a change with its files, properties and source stamp (found or
    /// made), then publish `changes/N/new`; returns the change's id.
    pub async fn add_change(&self, change: NewChange) -> Result<i64, DataError> {
        let ids = self.store_changes(Batch::new(self), vec![change]).await?;
        ids.first()
            .copied()
            .ok_or(DataError::Unexpected("returned no new change row"))
    }

    /// Run `batch` (what must commit with the changes) and the changes' own
    /// statements in one transaction, then publish the changes.
    async fn store_changes(
        &self,
        mut batch: Batch,
        changes: Vec<NewChange>,
    ) -> Result<Vec<i64>, DataError> {
        let pushed = changes
            .into_iter()
            .map(|c| push_change(&mut batch, c))
            .collect::<Result<Vec<_>, _>>()?;
        let mut rows = self.run_batch(batch).await?;
        let shown = stored_changes(&mut rows, pushed)?;
        let ids = shown
            .iter()
            .filter_map(|c| c["changeid"].as_i64())
            .collect();
        self.publish_changes(shown);
        Ok(ids)
    }

    /// Store the changes of one forge webhook delivery and its id together,
    /// in one transaction, then publish them; `None` (and nothing stored)
    /// when that delivery was already stored: the forge redelivered it. A
    /// crash can then neither lose the changes of a recorded delivery nor
    /// store them twice.
    pub async fn add_delivered_changes(
        &self,
        dialect: &str,
        delivery: Option<&str>,
        changes: Vec<NewChange>,
    ) -> Result<Option<Vec<i64>>, DataError> {
        use change_hook_deliveries::Column as D;
        let mut batch = Batch::new(self);
        if let Some(delivery) = delivery {
            // Unique per dialect: a redelivery's whole transaction fails on
            // this insert (no read first: a redelivery is rare, and every
            // other delivery saves a trip).
            batch.push(
                Query::insert()
                    .into_table(change_hook_deliveries::Entity)
                    .columns([D::Dialect, D::DeliveryId, D::ReceivedAt])
                    .values([dialect.into(), delivery.into(), super::now().into()])?,
            );
        }
        match self.store_changes(batch, changes).await {
            Ok(ids) => Ok(Some(ids)),
            Err(DataError::Db(e)) if delivery.is_some() && is_unique_violation(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Store a poller's changes and its new position (`key` of its object
    /// state) in one transaction, then publish them: a crash can neither
    /// lose the changes of a recorded position nor report them twice.
    pub async fn add_polled_changes(
        &self,
        changes: Vec<NewChange>,
        objectid: i64,
        key: &str,
        position: &Value,
    ) -> Result<Vec<i64>, DataError> {
        let mut batch = Batch::new(self);
        push_set_state(&mut batch, objectid, key, position)?;
        self.store_changes(batch, changes).await
    }

    /// Publish `changes/N/new` for stored changes, as the API shows them.
    fn publish_changes(&self, shown: Vec<Value>) {
        for change in shown {
            let Some(id) = change["changeid"].as_i64() else {
                continue;
            };
            self.bus.publish(
                Topic::Change {
                    id,
                    event: ChangeEvent::New,
                },
                change,
            );
        }
    }

    /// Changes after `after`, and those of `also` (ids a reader skipped
    /// because they were not committed yet), oldest first, at most `limit`,
    /// in the API's shape: what a scheduler reads.
    pub async fn changes_after(
        &self,
        after: i64,
        also: &[i64],
        limit: u64,
    ) -> Result<Vec<Value>, DataError> {
        use sea_orm::{Condition, QuerySelect};
        let mut which = Condition::any().add(changes::Column::Id.gt(after));
        if !also.is_empty() {
            which = which.add(changes::Column::Id.is_in(also.iter().copied()));
        }
        let rows = changes::Entity::find()
            .filter(which)
            .order_by_asc(changes::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?;
        self.changes_json(&rows).await
    }

    /// These changes, in the API's shape, oldest first.
    pub async fn changes_by_ids(&self, ids: &[i64]) -> Result<Vec<Value>, DataError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = changes::Entity::find()
            .filter(changes::Column::Id.is_in(ids.iter().copied()))
            .order_by_asc(changes::Column::Id)
            .all(&self.db)
            .await?;
        self.changes_json(&rows).await
    }

    /// The newest change's id (0 when there is none).
    pub async fn last_changeid(&self) -> Result<i64, DataError> {
        use sea_orm::QuerySelect;
        let max: Option<Option<i64>> = changes::Entity::find()
            .select_only()
            .column_as(changes::Column::Id.max(), "max")
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(max.flatten().unwrap_or(0))
    }

    /// The id of the source stamp with these attributes, made if needed (a
    /// scheduler's codebase that no change names).
    pub async fn sourcestamp_id(&self, stamp: &NewChange) -> Result<i64, DataError> {
        let mut batch = Batch::new(self);
        let (read, _) = push_sourcestamp(&mut batch, stamp)?;
        let mut rows = self.run_batch(batch).await?;
        let stamp: sourcestamps::Model =
            rows.one(read, "lost a source stamp row it had just made")?;
        Ok(stamp.id)
    }

    /// Source stamps, newest first unless the query orders otherwise.
    pub async fn list_sourcestamps(&self, q: &ListQuery) -> Result<(Vec<Value>, u64), DataError> {
        let select = apply(sourcestamps::Entity::find(), q, &sourcestamp_fields)?;
        let (rows, total) =
            fetch_page(&self.db, select, q, (sourcestamps::Column::Id, Order::Desc)).await?;
        Ok((rows.iter().map(sourcestamp_json).collect(), total))
    }

    /// The source stamps a buildset builds.
    pub async fn buildset_sourcestamps(&self, buildsetid: i64) -> Result<Vec<Value>, DataError> {
        let ssids: Vec<i64> = buildset_sourcestamps::Entity::find()
            .filter(buildset_sourcestamps::Column::Buildsetid.eq(buildsetid))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|r| r.sourcestampid)
            .collect();
        if ssids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(sourcestamps::Entity::find()
            .filter(sourcestamps::Column::Id.is_in(ssids))
            .all(&self.db)
            .await?
            .iter()
            .map(sourcestamp_json)
            .collect())
    }

    /// The source stamps a build builds (its buildset's); `None` when its
    /// request is not found.
    pub async fn build_sourcestamps(&self, build: &Value) -> Result<Option<Vec<Value>>, DataError> {
        let brid = build["buildrequestid"].as_i64().unwrap_or(0);
        let q = ListQuery::default().with_eq("buildrequestid", brid);
        let (requests, _) = self.list_buildrequests(&q).await?;
        match requests.first().and_then(|r| r["buildsetid"].as_i64()) {
            Some(bsid) => Ok(Some(self.buildset_sourcestamps(bsid).await?)),
            None => Ok(None),
        }
    }

    /// The builds made from these source stamps (under `q`, which may page
    /// and filter them): a change's builds.
    pub async fn builds_of_sourcestamps(
        &self,
        ssids: &[i64],
        q: ListQuery,
        with_properties: bool,
    ) -> Result<Vec<Value>, DataError> {
        let bsids: Vec<i64> = self
            .buildsets_of_sourcestamps(ssids)
            .await?
            .into_iter()
            .map(|(_, bsid)| bsid)
            .collect();
        Ok(self
            .builds_of_buildsets(&bsids, q, with_properties)
            .await?
            .into_iter()
            .map(|(_, build)| build)
            .collect())
    }

    /// The buildsets that build any of these source stamps, as (ssid, bsid).
    pub async fn buildsets_of_sourcestamps(
        &self,
        ssids: &[i64],
    ) -> Result<Vec<(i64, i64)>, DataError> {
        if ssids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(buildset_sourcestamps::Entity::find()
            .filter(buildset_sourcestamps::Column::Sourcestampid.is_in(ssids.to_vec()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|r| (r.sourcestampid, r.buildsetid))
            .collect())
    }
}
