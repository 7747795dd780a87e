//! Browser sessions ended by a logout. Cookies are signed and carry their own
//! expiry, so only the ended ones need a row; each row goes once its cookie
//! would have expired anyway.

use super::{Data, DataError};
use crate::db::entities::revoked_sessions;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, sea_query::OnConflict};

impl Data {
    /// Record that the session `nonce` (valid until `expires_at`) has ended.
    pub async fn revoke_session(&self, nonce: &str, expires_at: u64) -> Result<(), DataError> {
        let row = revoked_sessions::ActiveModel {
            nonce: Set(nonce.to_string()),
            expires_at: Set(expires_at as i64),
            ..Default::default()
        };
        // Two logouts of one session (two tabs) record it once.
        revoked_sessions::Entity::insert(row)
            .on_conflict(
                OnConflict::column(revoked_sessions::Column::Nonce)
                    .do_nothing()
                    .to_owned(),
            )
            .try_insert()
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// The sessions ended and not yet expired at `now`, as (nonce, expiry);
    /// the expired ones are forgotten first.
    pub async fn revoked_sessions(&self, now: u64) -> Result<Vec<(String, u64)>, DataError> {
        revoked_sessions::Entity::delete_many()
            .filter(revoked_sessions::Column::ExpiresAt.lte(now as i64))
            .exec(&self.db)
            .await?;
        Ok(revoked_sessions::Entity::find()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|r| (r.nonce, r.expires_at as u64))
            .collect())
    }
}
