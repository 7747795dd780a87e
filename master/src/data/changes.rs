//! The `changes` collection (commits that change sources and hooks report)
//! and the source stamps builds are made from, read for the API, the build
//! page's "sources" and the console view.

use super::query::{FieldKind, ListQuery, apply, cut_long_text, fetch_page, mark_cut};
use super::{Data, DataError};
use crate::db::entities::{buildset_sourcestamps, changes, sourcestamps};
use sea_orm::{ColumnTrait, EntityTrait, Order, QueryFilter};
use serde_json::{Value, json};

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
    })
}

impl Data {
    /// Changes, newest first unless the query orders otherwise.
    pub async fn list_changes(&self, q: &ListQuery) -> Result<(Vec<Value>, u64), DataError> {
        let select = apply(changes::Entity::find(), q, &fields)?;
        let select = cut_long_text(select, &[changes::Column::Comments], q);
        let (rows, total) =
            fetch_page(&self.db, select, q, (changes::Column::Id, Order::Desc)).await?;
        let mut out: Vec<Value> = rows.iter().map(change_json).collect();
        mark_cut(&mut out, &["comments"], q);
        Ok((out, total))
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
