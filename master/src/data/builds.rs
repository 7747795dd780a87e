//! The `builds` collection and build properties.

use super::buildsets::is_unique_violation;
use super::query::{FieldKind, ListQuery, apply, fetch_page};
use super::{Data, DataError, now};
use crate::db::entities::{build_properties, builds};
use crate::mq::Topic;
use crate::mq::topic::BuildEvent;
use sea_orm::Order;
use sea_orm::sea_query::{Expr, ExprTrait, Func, Query};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, FromQueryResult, QueryFilter};
use serde_json::{Value, json};
use std::collections::BTreeMap;

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
    })
}

impl Data {
    /// Start a new build of `builderid` for request `brid` on `workerid`; the
    /// number is the builder's next one. Returns (buildid, number).
    pub async fn add_build(
        &self,
        builderid: i64,
        brid: i64,
        workerid: i64,
    ) -> Result<(i64, i32), DataError> {
        use builds::Column as C;
        // One statement: the number is the builder's highest plus one,
        // `INSERT INTO builds (…) SELECT COALESCE(MAX(number), 0) + 1, … RETURNING *`.
        let next_number =
            Expr::expr(Func::coalesce([Expr::col(C::Number).max(), Expr::val(0)])).add(1);
        let values = Query::select()
            .expr(next_number)
            .exprs([
                Expr::val(builderid),
                Expr::val(brid),
                Expr::val(workerid),
                Expr::val(self.masterid),
                Expr::val(now()),
                Expr::val("building"),
            ])
            .from(builds::Entity)
            .and_where(Expr::col(C::Builderid).eq(builderid))
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
        let statement = self.db.get_database_backend().build(&insert);
        // Two masters' builds of one builder may start together (PostgreSQL):
        // retry on a number clash.
        let mut attempts = 0;
        loop {
            match builds::Model::find_by_statement(statement.clone())
                .one(&self.db)
                .await
            {
                Ok(Some(row)) => {
                    self.bus.publish(
                        Topic::Build {
                            id: row.id,
                            event: BuildEvent::New,
                        },
                        build_json(&row),
                    );
                    return Ok((row.id, row.number));
                }
                Ok(None) => {
                    return Err(DataError::Unexpected("returned no new build row"));
                }
                Err(e) if is_unique_violation(&e) && attempts < 10 => attempts += 1,
                Err(e) => return Err(e.into()),
            }
        }
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

    /// Build properties in Buildbot's API shape: name → [value, source].
    pub async fn build_properties(&self, buildid: i64) -> Result<Value, DataError> {
        let mut by_build = self.properties_of(&[buildid]).await?;
        Ok(Value::Object(by_build.remove(&buildid).unwrap_or_default()))
    }

    /// The properties of these builds in one query, by build id.
    async fn properties_of(
        &self,
        buildids: &[i64],
    ) -> Result<BTreeMap<i64, serde_json::Map<String, Value>>, DataError> {
        let mut by_build: BTreeMap<i64, serde_json::Map<String, Value>> = BTreeMap::new();
        for p in build_properties::Entity::find()
            .filter(build_properties::Column::Buildid.is_in(buildids.iter().copied()))
            .all(&self.db)
            .await?
        {
            let value: Value = serde_json::from_str(&p.value).unwrap_or(Value::Null);
            by_build
                .entry(p.buildid)
                .or_default()
                .insert(p.name, json!([value, p.source]));
        }
        Ok(by_build)
    }

    /// The build is over.
    pub async fn finish_build(
        &self,
        buildid: i64,
        results: i32,
        state: &str,
    ) -> Result<(), DataError> {
        let update = builds::Entity::update_many()
            .col_expr(builds::Column::CompleteAt, Expr::value(now()))
            .col_expr(builds::Column::Results, Expr::value(results))
            .col_expr(builds::Column::StateString, Expr::value(state));
        self.update_build(buildid, update, BuildEvent::Finished)
            .await
    }

    /// Apply `update` to one build and publish `builds/N/EVENT` with the
    /// updated row (one statement: `UPDATE … RETURNING`).
    async fn update_build(
        &self,
        buildid: i64,
        update: sea_orm::UpdateMany<builds::Entity>,
        event: BuildEvent,
    ) -> Result<(), DataError> {
        let rows = update
            .filter(builds::Column::Id.eq(buildid))
            .exec_with_returning(&self.db)
            .await?;
        for b in rows {
            self.bus
                .publish(Topic::Build { id: buildid, event }, build_json(&b));
        }
        Ok(())
    }

    /// Builds in the API's shape (`property=*` adds their properties).
    pub async fn list_builds(
        &self,
        q: &ListQuery,
        with_properties: bool,
    ) -> Result<(Vec<Value>, u64), DataError> {
        let select = apply(builds::Entity::find(), q, &fields)?;
        let (rows, total) =
            fetch_page(&self.db, select, q, (builds::Column::Id, Order::Asc)).await?;
        let mut out: Vec<Value> = rows.iter().map(build_json).collect();
        if with_properties && !rows.is_empty() {
            // The whole page's properties in one query, not one per build.
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            let mut by_build = self.properties_of(&ids).await?;
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
