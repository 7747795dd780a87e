//! The `artifacts` collection: what builds uploaded, listed for the API and
//! the build page, and found again by the janitor when it expires. The files
//! themselves are `crate::artifacts`'.

use super::batch::Batch;
use super::query::{FieldKind, ListQuery, apply, fetch_page};
use super::{Data, DataError, now};
use crate::db::entities::{artifacts, steps};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ColumnTrait, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect};
use serde_json::{Value, json};

/// A finished upload, as the step reports it.
#[derive(Debug, Clone)]
pub struct NewArtifact<'a> {
    pub buildid: i64,
    pub stepid: i64,
    pub name: &'a str,
    /// `file` or `directory`.
    pub kind: &'a str,
    pub size: u64,
    pub files: u64,
    pub path: &'a str,
    pub keep_days: u64,
}

fn fields(name: &str) -> Option<FieldKind<artifacts::Column>> {
    use artifacts::Column as C;
    Some(match name {
        "artifactid" => FieldKind::Int(C::Id),
        "buildid" => FieldKind::Int(C::Buildid),
        "stepid" => FieldKind::Int(C::Stepid),
        "name" => FieldKind::Text(C::Name),
        "type" => FieldKind::Text(C::Kind),
        "size" => FieldKind::Int(C::Size),
        "created_at" => FieldKind::Float(C::CreatedAt),
        "expires_at" => FieldKind::Float(C::ExpiresAt),
        _ => return None,
    })
}

/// An artifact in the API's shape (a moonbot addition to Buildbot's).
pub fn artifact_json(a: &artifacts::Model) -> Value {
    json!({
        "artifactid": a.id,
        "buildid": a.buildid,
        "stepid": a.stepid,
        "name": a.name,
        "type": a.kind,
        "size": a.size,
        "files": a.files,
        "created_at": a.created_at,
        "expires_at": a.expires_at,
        "url": format!("/api/v2/artifacts/{}/raw", a.id),
    })
}

impl Data {
    /// Record an upload (replacing the build's earlier one of the same name)
    /// and link it from its step; returns the new row.
    pub async fn add_artifact(&self, new: &NewArtifact<'_>) -> Result<artifacts::Model, DataError> {
        use artifacts::Column as C;
        let created = now();
        let expires = created + new.keep_days as f64 * 86_400.0;
        let mut batch = Batch::new(self);
        batch.push(
            Query::delete()
                .from_table(artifacts::Entity)
                .and_where(Expr::col(C::Buildid).eq(new.buildid))
                .and_where(Expr::col(C::Name).eq(new.name)),
        );
        let inserted = batch.push(
            Query::insert()
                .into_table(artifacts::Entity)
                .columns([
                    C::Buildid,
                    C::Stepid,
                    C::Name,
                    C::Kind,
                    C::Size,
                    C::Files,
                    C::Path,
                    C::CreatedAt,
                    C::ExpiresAt,
                ])
                .values([
                    new.buildid.into(),
                    new.stepid.into(),
                    new.name.into(),
                    new.kind.into(),
                    (new.size as i64).into(),
                    (new.files as i64).into(),
                    new.path.into(),
                    created.into(),
                    expires.into(),
                ])?
                .returning_all(),
        );
        let mut rows = self.run_batch(batch).await?;
        let row: artifacts::Model = rows.one(inserted, "returned no new artifact row")?;
        self.add_step_url(
            new.stepid,
            new.name,
            &format!("/api/v2/artifacts/{}/raw", row.id),
        )
        .await?;
        Ok(row)
    }

    /// Add `{name, url}` to a step's `urls` (Buildbot's `addURL`).
    pub async fn add_step_url(&self, stepid: i64, name: &str, url: &str) -> Result<(), DataError> {
        let Some(step) = steps::Entity::find_by_id(stepid).one(&self.db).await? else {
            return Ok(());
        };
        let mut urls: Vec<Value> = serde_json::from_str(&step.urls_json).unwrap_or_default();
        urls.retain(|u| u["name"] != name);
        urls.push(json!({ "name": name, "url": url }));
        steps::Entity::update_many()
            .col_expr(
                steps::Column::UrlsJson,
                Expr::val(Value::Array(urls).to_string()),
            )
            .filter(steps::Column::Id.eq(stepid))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    pub async fn list_artifacts(&self, q: &ListQuery) -> Result<(Vec<Value>, u64), DataError> {
        let select = apply(artifacts::Entity::find(), q, &fields)?;
        let (rows, total) =
            fetch_page(&self.db, select, q, (artifacts::Column::Id, Order::Asc)).await?;
        Ok((rows.iter().map(artifact_json).collect(), total))
    }

    pub async fn artifact(&self, id: i64) -> Result<Option<artifacts::Model>, DataError> {
        Ok(artifacts::Entity::find_by_id(id).one(&self.db).await?)
    }

    /// Artifacts whose time is up (at most `limit`, oldest first).
    pub async fn expired_artifacts(&self, limit: u64) -> Result<Vec<artifacts::Model>, DataError> {
        Ok(artifacts::Entity::find()
            .filter(artifacts::Column::ExpiresAt.lte(now()))
            .order_by_asc(artifacts::Column::ExpiresAt)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Which of `ids` are builds that exist.
    pub async fn existing_builds(&self, ids: &[i64]) -> Result<Vec<i64>, DataError> {
        use crate::db::entities::builds;
        Ok(builds::Entity::find()
            .select_only()
            .column(builds::Column::Id)
            .filter(builds::Column::Id.is_in(ids.iter().copied()))
            .into_tuple::<i64>()
            .all(&self.db)
            .await?)
    }

    /// Forget artifacts whose files are removed.
    pub async fn delete_artifacts(&self, ids: &[i64]) -> Result<(), DataError> {
        if ids.is_empty() {
            return Ok(());
        }
        artifacts::Entity::delete_many()
            .filter(artifacts::Column::Id.is_in(ids.iter().copied()))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}
