//! The `schedulers` collection, and what a change scheduler keeps: the
//! changes it accepted and has not built (`scheduler_changes`) and how far
//! it has read the changes (its object state). [`Data::schedule`] commits a
//! scheduler's step (classifications, buildsets, the removal of what they
//! build, its position) as one transaction, so a change is built once
//! whatever stops the master in between.

use super::batch::Batch;
use super::buildsets::{BuildsetIds, NewBuildset, push_buildsets};
use super::query::{FieldKind, ListQuery, apply, fetch_page};
use super::state::push_set_state;
use super::{Data, DataError};
use crate::db::entities::{scheduler_changes, schedulers};
use sea_orm::sea_query::{OnConflict, Query};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, Order, QueryFilter, QueryOrder};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The state key holding the id of the last change a scheduler has read.
pub const LAST_CHANGE_SEEN: &str = "last_changeid";
/// The state key holding the id of the last buildset a dependent scheduler
/// has read.
pub const LAST_BUILDSET_SEEN: &str = "last_buildsetid";
/// The object class under which a scheduler's state is kept.
pub const SCHEDULER_STATE: &str = "scheduler";

fn fields(name: &str) -> Option<FieldKind<schedulers::Column>> {
    use schedulers::Column as C;
    Some(match name {
        "schedulerid" => FieldKind::Int(C::Id),
        "name" => FieldKind::Text(C::Name),
        "enabled" => FieldKind::Bool(C::Enabled),
        _ => return None,
    })
}

/// A change a scheduler accepted and has not built yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    pub changeid: i64,
    pub important: bool,
    pub classified_at: f64,
}

/// What one scheduler step writes, all or nothing.
#[derive(Debug, Default)]
pub struct SchedulerStep {
    pub schedulerid: i64,
    /// Changes accepted, to keep until a tree-stable timer fires.
    pub classify: Vec<Classified>,
    /// Buildsets to add (each naming the classifications it consumes).
    pub buildsets: Vec<NewBuildset>,
    /// (object id, key, value): the scheduler's new state (its position,
    /// its last run).
    pub state: Vec<(i64, &'static str, Value)>,
}

impl Data {
    /// Make sure every configured scheduler has a row; returns name → id.
    pub async fn sync_schedulers(
        &self,
        names: &[&str],
    ) -> Result<BTreeMap<String, i64>, DataError> {
        if !names.is_empty() {
            schedulers::Entity::insert_many(names.iter().map(|name| schedulers::ActiveModel {
                name: Set(name.to_string()),
                enabled: Set(true),
                ..Default::default()
            }))
            .on_conflict(
                OnConflict::column(schedulers::Column::Name)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        }
        let rows = schedulers::Entity::find()
            .filter(schedulers::Column::Name.is_in(names.iter().copied()))
            .all(&self.db)
            .await?;
        *self
            .disabled_schedulers
            .write()
            .unwrap_or_else(|p| p.into_inner()) =
            rows.iter().filter(|s| !s.enabled).map(|s| s.id).collect();
        Ok(rows.into_iter().map(|s| (s.name, s.id)).collect())
    }

    /// Whether a scheduler was disabled (the API's `enable` with `enabled =
    /// false`): it then builds nothing, as in Buildbot.
    pub fn scheduler_disabled(&self, schedulerid: i64) -> bool {
        self.disabled_schedulers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&schedulerid)
    }

    /// Enable or disable a scheduler, stored so it lasts across restarts;
    /// returns it as the API shows it (`None`: no such scheduler).
    pub async fn set_scheduler_enabled(
        &self,
        schedulerid: i64,
        enabled: bool,
    ) -> Result<Option<Value>, DataError> {
        let updated = schedulers::Entity::update_many()
            .col_expr(
                schedulers::Column::Enabled,
                sea_orm::sea_query::Expr::value(enabled),
            )
            .filter(schedulers::Column::Id.eq(schedulerid))
            .exec(&self.db)
            .await?;
        if updated.rows_affected == 0 {
            return Ok(None);
        }
        {
            let mut disabled = self
                .disabled_schedulers
                .write()
                .unwrap_or_else(|p| p.into_inner());
            if enabled {
                disabled.remove(&schedulerid);
            } else {
                disabled.insert(schedulerid);
            }
        }
        let q = ListQuery::default().with_eq("schedulerid", schedulerid);
        let row = schedulers::Entity::find_by_id(schedulerid)
            .one(&self.db)
            .await?;
        let running: Vec<&str> = row.iter().map(|r| r.name.as_str()).collect();
        let shown = self
            .list_schedulers(&q, &running)
            .await?
            .0
            .into_iter()
            .next();
        if let Some(shown) = &shown {
            self.bus.publish(
                crate::mq::Topic::Scheduler {
                    id: schedulerid,
                    event: crate::mq::topic::SchedulerEvent::Updated,
                },
                shown.clone(),
            );
        }
        Ok(shown)
    }

    /// Give the schedulers that read changes (`by_changes`) or buildsets
    /// (`by_buildsets`) and have no position yet the newest one as their
    /// position, before they start: a new scheduler builds what comes after
    /// the configuration that made it, even a change that comes before its
    /// task first runs.
    pub async fn start_positions(
        &self,
        by_changes: &[&str],
        by_buildsets: &[&str],
    ) -> Result<(), DataError> {
        for (names, key) in [
            (by_changes, LAST_CHANGE_SEEN),
            (by_buildsets, LAST_BUILDSET_SEEN),
        ] {
            for name in names {
                self.scheduler_position(name, key).await?;
            }
        }
        Ok(())
    }

    /// A scheduler's state object and its position under `key`
    /// ([`LAST_CHANGE_SEEN`] or [`LAST_BUILDSET_SEEN`]); one without a
    /// position gets the newest change or buildset id as its position first
    /// (what comes before a scheduler existed is not its to build).
    pub async fn scheduler_position(
        &self,
        name: &str,
        key: &'static str,
    ) -> Result<(i64, i64), DataError> {
        use crate::db::entities::buildsets;
        use sea_orm::QuerySelect;
        let objectid = self.object_id(name, SCHEDULER_STATE).await?;
        if let Some(position) = self.object_state(objectid, key).await? {
            return Ok((objectid, position.as_i64().unwrap_or(0)));
        }
        let newest = if key == LAST_CHANGE_SEEN {
            self.last_changeid().await?
        } else {
            let max: Option<Option<i64>> = buildsets::Entity::find()
                .select_only()
                .column_as(buildsets::Column::Id.max(), "max")
                .into_tuple()
                .one(&self.db)
                .await?;
            max.flatten().unwrap_or(0)
        };
        self.set_object_state(objectid, key, &json!(newest)).await?;
        Ok((objectid, newest))
    }

    /// Schedulers in Buildbot's shape; `master` is this master for the ones
    /// the running configuration lists (`running`), null for the others.
    pub async fn list_schedulers(
        &self,
        q: &ListQuery,
        running: &[&str],
    ) -> Result<(Vec<Value>, u64), DataError> {
        let select = apply(schedulers::Entity::find(), q, &fields)?;
        let (rows, total) =
            fetch_page(&self.db, select, q, (schedulers::Column::Id, Order::Asc)).await?;
        let master = self.this_master_json().await?;
        Ok((
            rows.into_iter()
                .map(|s| {
                    let runs = running.contains(&s.name.as_str());
                    json!({
                        "schedulerid": s.id,
                        "name": s.name,
                        "enabled": s.enabled,
                        "master": if runs { master.clone() } else { Value::Null },
                    })
                })
                .collect(),
            total,
        ))
    }

    /// The changes a scheduler accepted and has not built, oldest first.
    pub async fn classified_changes(&self, schedulerid: i64) -> Result<Vec<Classified>, DataError> {
        Ok(scheduler_changes::Entity::find()
            .filter(scheduler_changes::Column::Schedulerid.eq(schedulerid))
            .order_by_asc(scheduler_changes::Column::Changeid)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| Classified {
                changeid: row.changeid,
                important: row.important,
                classified_at: row.classified_at,
            })
            .collect())
    }

    /// Forget every change a scheduler was waiting on (its filter changed,
    /// or it was removed from the configuration).
    pub async fn forget_classified(&self, schedulerid: i64) -> Result<(), DataError> {
        scheduler_changes::Entity::delete_many()
            .filter(scheduler_changes::Column::Schedulerid.eq(schedulerid))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Commit a scheduler's step; returns each new buildset's id and
    /// builderid → request id.
    ///
    /// A disabled scheduler's step keeps only its new position: what it read
    /// while disabled is not built, later or ever (Buildbot's behaviour).
    pub async fn schedule(&self, mut step: SchedulerStep) -> Result<Vec<BuildsetIds>, DataError> {
        if self.scheduler_disabled(step.schedulerid) {
            step.classify.clear();
            step.buildsets.clear();
        }
        let mut batch = Batch::new(self);
        if !step.classify.is_empty() {
            use scheduler_changes::Column as C;
            let mut insert = Query::insert();
            insert
                .into_table(scheduler_changes::Entity)
                .columns([C::Schedulerid, C::Changeid, C::Important, C::ClassifiedAt])
                .on_conflict(
                    OnConflict::columns([C::Schedulerid, C::Changeid])
                        .do_nothing()
                        .to_owned(),
                );
            for c in &step.classify {
                insert.values([
                    step.schedulerid.into(),
                    c.changeid.into(),
                    c.important.into(),
                    c.classified_at.into(),
                ])?;
            }
            batch.push(&insert);
        }
        let added = push_buildsets(&mut batch, &step.buildsets)?;
        for (objectid, key, value) in &step.state {
            push_set_state(&mut batch, *objectid, key, value)?;
        }
        let mut rows = self.run_batch(batch).await?;
        self.publish_buildsets(&mut rows, added)
    }
}
