//! The `steps` collection.

use super::query::{FieldKind, ListQuery, apply, fetch_page};
use super::{Data, DataError, now};
use crate::db::entities::steps;
use crate::mq::Topic;
use crate::mq::topic::StepEvent;
use sea_orm::Order;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

fn fields(name: &str) -> Option<FieldKind<steps::Column>> {
    use steps::Column as C;
    Some(match name {
        "stepid" => FieldKind::Int(C::Id),
        "number" => FieldKind::Int(C::Number),
        "name" => FieldKind::Text(C::Name),
        "buildid" => FieldKind::Int(C::Buildid),
        "started_at" => FieldKind::Float(C::StartedAt),
        "complete_at" => FieldKind::Float(C::CompleteAt),
        "complete" => FieldKind::NotNull(C::CompleteAt),
        "results" => FieldKind::Int(C::Results),
        "hidden" => FieldKind::Bool(C::Hidden),
        _ => return None,
    })
}

fn step_json(s: &steps::Model) -> Value {
    let urls: Value = serde_json::from_str(&s.urls_json).unwrap_or_else(|_| json!([]));
    json!({
        "stepid": s.id,
        "number": s.number,
        "name": s.name,
        "buildid": s.buildid,
        "started_at": s.started_at,
        "complete_at": s.complete_at,
        "complete": s.complete_at.is_some(),
        "results": s.results,
        "state_string": s.state_string,
        "urls": urls,
        "hidden": s.hidden,
    })
}

impl Data {
    /// A step of `buildid` starts now; returns its id.
    pub async fn start_step(
        &self,
        buildid: i64,
        number: i32,
        name: &str,
        state: &str,
    ) -> Result<i64, DataError> {
        let row = steps::ActiveModel {
            number: Set(number),
            name: Set(name.to_string()),
            buildid: Set(buildid),
            started_at: Set(Some(now())),
            state_string: Set(state.to_string()),
            urls_json: Set("[]".into()),
            hidden: Set(false),
            ..Default::default()
        }
        .insert(&self.db)
        .await?;
        self.bus.publish(
            Topic::Step {
                id: row.id,
                event: StepEvent::Started,
            },
            step_json(&row),
        );
        Ok(row.id)
    }

    pub async fn finish_step(
        &self,
        stepid: i64,
        results: i32,
        state: &str,
    ) -> Result<(), DataError> {
        let finished = steps::Entity::update_many()
            .col_expr(steps::Column::CompleteAt, Expr::value(now()))
            .col_expr(steps::Column::Results, Expr::value(results))
            .col_expr(steps::Column::StateString, Expr::value(state))
            .filter(steps::Column::Id.eq(stepid))
            .exec_with_returning(&self.db)
            .await?;
        for s in finished {
            self.bus.publish(
                Topic::Step {
                    id: stepid,
                    event: StepEvent::Finished,
                },
                step_json(&s),
            );
        }
        Ok(())
    }

    pub async fn list_steps(&self, q: &ListQuery) -> Result<(Vec<Value>, u64), DataError> {
        let select = apply(steps::Entity::find(), q, &fields)?;
        let (rows, total) =
            fetch_page(&self.db, select, q, (steps::Column::Number, Order::Asc)).await?;
        Ok((rows.iter().map(step_json).collect(), total))
    }
}
