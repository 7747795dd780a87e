//! The `builds` collection and build properties.

use super::batch::Batch;
use super::buildsets::{
    Completion, PendingRequest, buildset_properties_from, is_unique_violation, push_completion,
};
use super::query::{FieldKind, ListQuery, apply, cut_long_text, fetch_page, mark_cut, shorten};
use super::{Data, DataError, now};
use crate::db::entities::{
    build_properties, builds, buildset_properties, buildset_sourcestamps, sourcestamps,
};
use crate::mq::Topic;
use crate::mq::topic::BuildEvent;
use sea_orm::sea_query::{Expr, ExprTrait, Func, Query};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QuerySelect, QueryTrait};
use sea_orm::{Order, QueryOrder};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A build just recorded, with what its buildset was submitted with.
#[derive(Debug)]
pub struct StartedBuild {
    pub buildid: i64,
    pub number: i32,
    /// name → (value, source)
    pub buildset_properties: BTreeMap<String, (Value, String)>,
    /// What the buildset builds (none for a build forced without a codebase).
    pub sourcestamps: Vec<sourcestamps::Model>,
}

fn fields(name: &str) -> Option<FieldKind<builds::Column>> {
    use builds::Column as C;
    Some(match name {
        "buildid" => FieldKind::Int(C::Id),
        "number" => FieldKind::Int(C::Number),
        "builderid" => FieldKind::Int(C::Builderid),
        "buildrequestid" => FieldKind::Int(C::Buildrequestid),
        "workerid" => FieldKind::Int(C::Workerid),
        "masterid" => FieldKind::Int(C::Masterid),
        "started_at" => FieldKind::Float(C::StartedAt),
        "complete_at" => FieldKind::Float(C::CompleteAt),
        "complete" => FieldKind::NotNull(C::CompleteAt),
        "results" => FieldKind::Int(C::Results),
        "state_string" => FieldKind::Text(C::StateString),
        _ => return None,
    })
}

fn build_json(b: &builds::Model) -> Value {
    json!({
        "buildid": b.id,
        "number": b.number,
        "builderid": b.builderid,
        "buildrequestid": b.buildrequestid,
        "workerid": b.workerid,
        "masterid": b.masterid,
        "started_at": b.started_at,
        "complete_at": b.complete_at,
        "complete": b.complete_at.is_some(),
        "results": b.results,
        "state_string": b.state_string,
        "locks_duration_s": b.locks_duration_s,
    })
}

/// The statements that mark `collapsed` as collapsed into the build a batch
/// just inserted, and complete them SKIPPED (with their buildsets, when
/// they were the last open request).
fn push_collapse(batch: &mut Batch, collapsed: &[PendingRequest]) -> Vec<Completion> {
    use crate::db::entities::buildrequests::{Column as R, Entity as Requests};
    if collapsed.is_empty() {
        return Vec::new();
    }
    let buildid = batch.last_id("builds");
    batch.push(
        Query::update()
            .table(Requests)
            .value(R::CollapsedInto, buildid)
            .and_where(Expr::col(R::Id).is_in(collapsed.iter().map(|r| r.brid))),
    );
    let at = now();
    collapsed
        .iter()
        .map(|request| push_completion(batch, request, crate::results::SKIPPED, at))
        .collect()
}

impl Data {
    /// Start a new build of `request` on `workerid`; the number is the
    /// builder's next one. Reads the buildset's properties in the same trip.
    /// `collapsed` are claimed requests of the same builder that this build
    /// stands for (`collapse_requests`): in the same transaction they end
    /// SKIPPED, marked as collapsed into the new build.
    pub async fn start_build(
        &self,
        request: &PendingRequest,
        workerid: i64,
        collapsed: &[PendingRequest],
    ) -> Result<StartedBuild, DataError> {
        use builds::Column as C;
        // `INSERT INTO builds (…) SELECT COALESCE(MAX(number), 0) + 1, … RETURNING *`.
        let next_number =
            Expr::expr(Func::coalesce([Expr::col(C::Number).max(), Expr::val(0)])).add(1);
        let values = Query::select()
            .expr(next_number)
            .exprs([
                Expr::val(request.builderid),
                Expr::val(request.brid),
                Expr::val(workerid),
                Expr::val(self.masterid),
                Expr::val(now()),
                Expr::val("building"),
            ])
            .from(builds::Entity)
            .and_where(Expr::col(C::Builderid).eq(request.builderid))
            .to_owned();
        let insert = Query::insert()
            .into_table(builds::Entity)
            .columns([
                C::Number,
                C::Builderid,
                C::Buildrequestid,
                C::Workerid,
                C::Masterid,
                C::StartedAt,
                C::StateString,
            ])
            .select_from(values)?
            .returning_all()
            .to_owned();
        let properties = buildset_properties::Entity::find()
            .filter(buildset_properties::Column::Buildsetid.eq(request.buildsetid))
            .into_query();
        let stamps = sourcestamps::Entity::find()
            .filter(
                sourcestamps::Column::Id.in_subquery(
                    Query::select()
                        .column(buildset_sourcestamps::Column::Sourcestampid)
                        .from(buildset_sourcestamps::Entity)
                        .and_where(
                            Expr::col(buildset_sourcestamps::Column::Buildsetid)
                                .eq(request.buildsetid),
                        )
                        .to_owned(),
                ),
            )
            .order_by_asc(sourcestamps::Column::Codebase)
            .into_query();
        // Two masters' builds of one builder may start together (PostgreSQL):
        // retry on a number clash.
        let mut attempts = 0;
        let (mut rows, build, props, stamps, completions) = loop {
            let mut batch = Batch::new(self);
            let build = batch.push(&insert);
            batch.push_report_event(
                super::reports::ReportEvent::BuildStarted,
                batch.last_id("builds"),
            );
            let props = batch.push(&properties);
            let stamps = batch.push(&stamps);
            let completions = push_collapse(&mut batch, collapsed);
            match self.run_batch(batch).await {
                Ok(rows) => break (rows, build, props, stamps, completions),
                Err(DataError::Db(e)) if is_unique_violation(&e) && attempts < 10 => attempts += 1,
                Err(e) => return Err(e),
            }
        };
        let row: builds::Model = rows.one(build, "returned no new build row")?;
        let properties = buildset_properties_from(rows.models(props)?);
        let sourcestamps = rows.models(stamps)?;
        for (completion, request) in completions.into_iter().zip(collapsed) {
            self.publish_completion(&mut rows, completion, request)?;
        }
        self.bus.publish(
            Topic::Build {
                id: row.id,
                event: BuildEvent::New,
            },
            build_json(&row),
        );
        Ok(StartedBuild {
            buildid: row.id,
            number: row.number,
            buildset_properties: properties,
            sourcestamps,
        })
    }

    /// The changes of a build: those its buildset was made from or whose
    /// source stamp it builds, and those of every request collapsed into it
    /// (or into an earlier build of its request, which ended RETRY), under
    /// `q`. `None` when there is no such build.
    pub async fn changes_of_build(
        &self,
        buildid: i64,
        q: ListQuery,
    ) -> Result<Option<Vec<Value>>, DataError> {
        use crate::db::entities::{buildrequests, buildset_changes, changes};
        let Some(build) = builds::Entity::find_by_id(buildid).one(&self.db).await? else {
            return Ok(None);
        };
        let tries = Query::select()
            .column(builds::Column::Id)
            .from(builds::Entity)
            .and_where(Expr::col(builds::Column::Buildrequestid).eq(build.buildrequestid))
            .to_owned();
        let bsids: Vec<i64> = buildrequests::Entity::find()
            .filter(
                sea_orm::Condition::any()
                    .add(buildrequests::Column::Id.eq(build.buildrequestid))
                    .add(buildrequests::Column::CollapsedInto.in_subquery(tries)),
            )
            .all(&self.db)
            .await?
            .into_iter()
            .map(|r| r.buildsetid)
            .collect();
        let ssids = Query::select()
            .column(buildset_sourcestamps::Column::Sourcestampid)
            .from(buildset_sourcestamps::Entity)
            .and_where(Expr::col(buildset_sourcestamps::Column::Buildsetid).is_in(bsids.clone()))
            .to_owned();
        let linked = Query::select()
            .column(buildset_changes::Column::Id)
            .from(buildset_changes::Entity)
            .and_where(Expr::col(buildset_changes::Column::Buildsetid).is_in(bsids))
            .to_owned();
        let changeids: Vec<i64> = changes::Entity::find()
            .select_only()
            .column(changes::Column::Id)
            .filter(
                sea_orm::Condition::any()
                    .add(changes::Column::Sourcestampid.in_subquery(ssids))
                    .add(changes::Column::Id.in_subquery(linked)),
            )
            .into_tuple()
            .all(&self.db)
            .await?;
        if changeids.is_empty() {
            return Ok(Some(Vec::new()));
        }
        Ok(Some(
            self.list_changes(&q.with_any("changeid", changeids))
                .await?
                .0,
        ))
    }

    /// Record the properties of a build that has none yet (name → (value,
    /// source)), in one multi-row insert.
    pub async fn add_build_properties(
        &self,
        buildid: i64,
        props: &BTreeMap<String, (Value, String)>,
    ) -> Result<(), DataError> {
        if props.is_empty() {
            return Ok(());
        }
        build_properties::Entity::insert_many(props.iter().map(|(name, (value, source))| {
            build_properties::ActiveModel {
                buildid: Set(buildid),
                name: Set(name.clone()),
                value: Set(value.to_string()),
                source: Set(source.clone()),
                ..Default::default()
            }
        }))
        .exec(&self.db)
        .await?;
        Ok(())
    }

    /// Set one property of a running build (a step's), replacing its value
    /// and source when it is set already.
    pub async fn set_build_property(
        &self,
        buildid: i64,
        name: &str,
        value: &Value,
        source: &str,
    ) -> Result<(), DataError> {
        use build_properties::Column as C;
        build_properties::Entity::insert(build_properties::ActiveModel {
            buildid: Set(buildid),
            name: Set(name.to_string()),
            value: Set(value.to_string()),
            source: Set(source.to_string()),
            ..Default::default()
        })
        .on_conflict(
            sea_orm::sea_query::OnConflict::columns([C::Buildid, C::Name])
                .update_columns([C::Value, C::Source])
                .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        Ok(())
    }

    /// Build properties in Buildbot's API shape: name → [value, source].
    pub async fn build_properties(&self, buildid: i64) -> Result<Value, DataError> {
        let mut by_build = self
            .properties_of(&[buildid], &ListQuery::default().whole())
            .await?;
        Ok(Value::Object(by_build.remove(&buildid).unwrap_or_default()))
    }

    /// The properties of these builds in one query, by build id. In a list
    /// (`q` does not show texts whole), a value too long to show whole is
    /// shown as the start of its JSON text, cut.
    async fn properties_of(
        &self,
        buildids: &[i64],
        q: &ListQuery,
    ) -> Result<BTreeMap<i64, serde_json::Map<String, Value>>, DataError> {
        let mut by_build: BTreeMap<i64, serde_json::Map<String, Value>> = BTreeMap::new();
        let select = build_properties::Entity::find()
            .filter(build_properties::Column::Buildid.is_in(buildids.iter().copied()));
        for p in cut_long_text(select, &[build_properties::Column::Value], q)
            .all(&self.db)
            .await?
        {
            let value: Value = match serde_json::from_str(&p.value) {
                Ok(value) => value,
                Err(_) if !q.whole_text => Value::String(shorten(&p.value).into_owned()),
                Err(_) => Value::Null,
            };
            by_build
                .entry(p.buildid)
                .or_default()
                .insert(p.name, json!([value, p.source]));
        }
        Ok(by_build)
    }

    /// The build is over. With `request`, that request is complete too (and
    /// its buildset, when it was the last open request), in the same
    /// transaction: one trip on SQLite.
    /// How many builds of request `brid` ended RETRY.
    pub async fn retried_builds(&self, brid: i64) -> Result<u64, DataError> {
        use sea_orm::PaginatorTrait;
        Ok(builds::Entity::find()
            .filter(builds::Column::Buildrequestid.eq(brid))
            .filter(builds::Column::Results.eq(crate::results::RETRY))
            .count(&self.db)
            .await?)
    }

    /// What a running build shows (`waiting for lock X`), and seconds to add
    /// to its time waiting for locks.
    pub async fn update_build_state(
        &self,
        buildid: i64,
        state: &str,
        add_locks_s: i64,
    ) -> Result<(), DataError> {
        use builds::Column as C;
        let mut batch = Batch::new(self);
        let build = batch.push(
            Query::update()
                .table(builds::Entity)
                .values([
                    (C::StateString, state.into()),
                    (
                        C::LocksDurationS,
                        Expr::col(C::LocksDurationS).add(add_locks_s),
                    ),
                ])
                .and_where(Expr::col(C::Id).eq(buildid))
                .returning_all(),
        );
        let mut rows = self.run_batch(batch).await?;
        for b in rows.models::<builds::Model>(build)? {
            self.bus.publish(
                Topic::Build {
                    id: buildid,
                    event: BuildEvent::Update,
                },
                build_json(&b),
            );
        }
        Ok(())
    }

    pub async fn finish_build(
        &self,
        buildid: i64,
        results: i32,
        state: &str,
        request: Option<&PendingRequest>,
    ) -> Result<(), DataError> {
        use builds::Column as C;
        let at = now();
        let mut batch = Batch::new(self);
        let build = batch.push(
            Query::update()
                .table(builds::Entity)
                .values([
                    (C::CompleteAt, at.into()),
                    (C::Results, results.into()),
                    (C::StateString, state.into()),
                ])
                .and_where(Expr::col(C::Id).eq(buildid))
                .returning_all(),
        );
        batch.push_report_event(super::reports::ReportEvent::BuildFinished, buildid);
        let completion = request.map(|r| (push_completion(&mut batch, r, results, at), r));
        let mut rows = self.run_batch(batch).await?;
        for b in rows.models::<builds::Model>(build)? {
            self.bus.publish(
                Topic::Build {
                    id: buildid,
                    event: BuildEvent::Finished,
                },
                build_json(&b),
            );
        }
        match completion {
            Some((completion, request)) => self.publish_completion(&mut rows, completion, request),
            None => Ok(()),
        }
    }

    /// Builds in the API's shape (`property=*` adds their properties).
    pub async fn list_builds(
        &self,
        q: &ListQuery,
        with_properties: bool,
    ) -> Result<(Vec<Value>, u64), DataError> {
        let select = apply(builds::Entity::find(), q, &fields)?;
        let select = cut_long_text(select, &[builds::Column::StateString], q);
        let (rows, total) =
            fetch_page(&self.db, select, q, (builds::Column::Id, Order::Asc)).await?;
        let mut out: Vec<Value> = rows.iter().map(build_json).collect();
        mark_cut(&mut out, &["state_string"], q);
        // Buildbot's shape without `property=`: no properties.
        for j in &mut out {
            j["properties"] = json!({});
        }
        if with_properties && !rows.is_empty() {
            // The whole page's properties in one query, not one per build.
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            let mut by_build = self.properties_of(&ids, q).await?;
            for (j, r) in out.iter_mut().zip(&rows) {
                j["properties"] = Value::Object(by_build.remove(&r.id).unwrap_or_default());
            }
        }
        Ok((out, total))
    }

    /// The newest build of each builder that has one, by builder id, in one
    /// query (the home page, the builders list and badges all need it).
    pub async fn last_builds(&self) -> Result<BTreeMap<i64, Value>, DataError> {
        // One index seek per builder (`uq_builds_builderid_number`, backwards),
        // not a scan of every build: the home page stays fast at any history.
        let newest = sea_orm::Statement::from_string(
            self.db.get_database_backend(),
            "SELECT * FROM builds WHERE id IN (SELECT (SELECT b.id FROM builds b \
             WHERE b.builderid = x.id ORDER BY b.number DESC LIMIT 1) FROM builders x)",
        );
        Ok(builds::Entity::find()
            .from_raw_sql(newest)
            .all(&self.db)
            .await?
            .iter()
            .map(|b| (b.builderid, build_json(b)))
            .collect())
    }
}
