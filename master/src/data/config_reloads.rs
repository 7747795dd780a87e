//! The `config_reloads` collection: what each load of master.lua did, for the
//! API (`/api/v2/config`), the status page banner and `moonbot reconfig`.

use super::query::{FieldKind, ListQuery, apply, fetch_page};
use super::{Data, DataError};
use crate::config::ConfigError;
use crate::config::diff::ConfigDiff;
use crate::db::entities::config_reloads;
use crate::mq::Topic;
use crate::mq::topic::ConfigReloadEvent;
use sea_orm::Order;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

fn fields(name: &str) -> Option<FieldKind<config_reloads::Column>> {
    use config_reloads::Column as C;
    Some(match name {
        "reloadid" => FieldKind::Int(C::Id),
        "masterid" => FieldKind::Int(C::Masterid),
        "success" => FieldKind::Bool(C::Success),
        "trigger" => FieldKind::Text(C::Trigger),
        "started_at" => FieldKind::Float(C::StartedAt),
        _ => return None,
    })
}

/// One finished load of master.lua, ready to be stored.
#[derive(Debug, Clone)]
pub struct ReloadRecord {
    pub started_at: f64,
    pub duration_ms: f64,
    /// `startup`, `file`, `signal` or `api`.
    pub trigger: &'static str,
    pub errors: Vec<ConfigError>,
    pub changes: ConfigDiff,
    /// The configuration in force afterwards (`2 worker(s), 3 builder(s) …`).
    pub summary: String,
}

impl Data {
    /// Store a reload's outcome and publish `config_reloads/{id}/new`; returns
    /// the API shape.
    pub async fn record_reload(&self, r: &ReloadRecord) -> Result<Value, DataError> {
        let row = config_reloads::ActiveModel {
            masterid: Set(self.masterid),
            started_at: Set(r.started_at),
            duration_ms: Set(r.duration_ms),
            trigger: Set(r.trigger.to_string()),
            success: Set(r.errors.is_empty()),
            errors: Set(serde_json::to_string(&r.errors).unwrap_or_else(|_| "[]".into())),
            changes: Set(serde_json::to_string(&r.changes).unwrap_or_else(|_| "{}".into())),
            summary: Set(r.summary.clone()),
            ..Default::default()
        }
        .insert(&self.db)
        .await?;
        let value = reload_json(&row);
        self.bus.publish(
            Topic::ConfigReload {
                id: row.id,
                event: ConfigReloadEvent::New,
            },
            value.clone(),
        );
        Ok(value)
    }

    /// Reloads of this master, newest first unless the query orders otherwise.
    pub async fn list_reloads(&self, q: &ListQuery) -> Result<(Vec<Value>, u64), DataError> {
        let select = config_reloads::Entity::find()
            .filter(config_reloads::Column::Masterid.eq(self.masterid));
        let select = apply(select, q, &fields)?;
        let (rows, total) = fetch_page(
            &self.db,
            select,
            q,
            (config_reloads::Column::Id, Order::Desc),
        )
        .await?;
        Ok((rows.iter().map(reload_json).collect(), total))
    }
}

fn reload_json(row: &config_reloads::Model) -> Value {
    let parse = |text: &str, empty: Value| serde_json::from_str(text).unwrap_or(empty);
    json!({
        "reloadid": row.id,
        "masterid": row.masterid,
        "started_at": row.started_at,
        "duration_ms": row.duration_ms,
        "trigger": row.trigger,
        "success": row.success,
        "errors": parse(&row.errors, json!([])),
        "changes": parse(&row.changes, json!({})),
        "summary": row.summary,
    })
}
