//! The roster's two verbs: load every account's presence into memory, and record a batch of
//! what the roster applied in one transaction of a few multi-row statements (a group commit:
//! the statement count does not grow with the batch).

use std::collections::{BTreeMap, HashMap};

use sqlx::Row;

use super::{SqlStore, StoreError};
use crate::domain::roster::{AccountPresence, GrantState};
use crate::domain::{AccountId, DeviceId, Status};
use crate::store::{PresenceBatch, PresenceLoad};

/// Rows per multi-row statement (SQLite allows 32,766 parameters in one statement).
const ROWS: usize = 1000;

/// `($1, $2), ($3, $4), …` for `rows` rows of `width` parameters, starting after `first`; each
/// row ends with `tail` when it is not empty (say, `$1` for a value every row shares).
fn values(rows: usize, width: usize, first: usize, tail: &str) -> String {
    let mut text = String::with_capacity(rows * width * 5);
    for row in 0..rows {
        if row > 0 {
            text.push_str(", ");
        }
        text.push('(');
        for column in 0..width {
            if column > 0 {
                text.push_str(", ");
            }
            text.push_str(&format!("${}", first + row * width + column + 1));
        }
        if !tail.is_empty() {
            text.push_str(", ");
            text.push_str(tail);
        }
        text.push(')');
    }
    text
}

/// `$1, $2, …` for an `IN` list.
fn list(count: usize) -> String {
    (1..=count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

impl SqlStore {
    pub(super) async fn load_roster(
        &self,
        accounts: Option<&[AccountId]>,
        apps: &[String],
    ) -> Result<PresenceLoad, StoreError> {
        let ids: Vec<i64> = accounts.map(|a| a.iter().map(|a| a.0).collect()).unwrap_or_default();
        let filter = |column: &str| match accounts {
            None => String::new(),
            Some(_) if ids.is_empty() => " WHERE 1 = 0".to_owned(),
            Some(_) => format!(" WHERE {column} IN ({})", list(ids.len())),
        };
        let mut found: BTreeMap<i64, AccountPresence> = BTreeMap::new();
        let sql = format!("SELECT id, appear_offline, status, visible FROM accounts{}", filter("id"));
        let mut query = sqlx::query(&sql);
        for id in &ids {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&self.pool).await? {
            let id: i64 = row.get(0);
            found.insert(
                id,
                AccountPresence {
                    account: AccountId(id),
                    appear_offline: row.get::<i64, _>(1) != 0,
                    best: Status::from_rank(row.get(2)),
                    visible: Status::from_rank(row.get(3)),
                    devices: Vec::new(),
                    grants: Vec::new(),
                },
            );
        }
        let sql = format!("SELECT id, account_id, status FROM devices{} ORDER BY id", filter("account_id"));
        let mut query = sqlx::query(&sql);
        for id in &ids {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&self.pool).await? {
            let Some(device) = DeviceId::parse(row.get::<&str, _>(0)) else { continue };
            if let Some(account) = found.get_mut(&row.get::<i64, _>(1)) {
                account.devices.push((device, Status::from_rank(row.get(2))));
            }
        }
        let sql = format!(
            "SELECT account_id, app_id, uid, coarse, enabled, last_status FROM grants{} ORDER BY app_id",
            filter("account_id")
        );
        let mut query = sqlx::query(&sql);
        for id in &ids {
            query = query.bind(*id);
        }
        let mut granted: Vec<String> = apps.to_vec();
        for row in query.fetch_all(&self.pool).await? {
            let app_id: String = row.get(1);
            let told = row.get::<Option<&str>, _>(5).and_then(status_named);
            if let Some(account) = found.get_mut(&row.get::<i64, _>(0)) {
                account.grants.push(GrantState {
                    app_id: app_id.as_str().into(),
                    uid: row.get::<&str, _>(2).into(),
                    coarse: row.get::<i64, _>(3) != 0,
                    enabled: row.get::<i64, _>(4) != 0,
                    told,
                });
            }
            granted.push(app_id);
        }
        granted.sort();
        granted.dedup();
        let sql = match accounts {
            None => "SELECT app_id, last_seq FROM apps".to_owned(),
            Some(_) if granted.is_empty() => "SELECT app_id, last_seq FROM apps WHERE 1 = 0".to_owned(),
            Some(_) => format!("SELECT app_id, last_seq FROM apps WHERE app_id IN ({})", list(granted.len())),
        };
        let mut query = sqlx::query(&sql);
        if accounts.is_some() {
            for app in &granted {
                query = query.bind(app.as_str());
            }
        }
        let seqs = query
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|row| (row.get::<String, _>(0), row.get::<i64, _>(1) as u64))
            .collect();
        Ok(PresenceLoad { accounts: found.into_values().collect(), seqs })
    }

    pub(super) async fn record_roster(&self, batch: &PresenceBatch, now: i64) -> Result<(), StoreError> {
        // Rows in a fixed order, whichever order the reports came in.
        let devices: BTreeMap<&str, i64> =
            batch.devices.iter().map(|(device, status)| (device.as_str(), status.rank())).collect();
        let accounts: BTreeMap<i64, (i64, i64)> = batch
            .accounts
            .iter()
            .map(|(account, best, shown)| (account.0, (best.rank(), shown.rank())))
            .collect();
        let mut told: BTreeMap<&str, &'static str> = BTreeMap::new();
        let mut last_seqs: HashMap<&str, u64> = HashMap::new();
        for event in &batch.events {
            told.insert(&event.uid, event.status.name());
            let seq = last_seqs.entry(&event.app_id).or_insert(0);
            *seq = (*seq).max(event.seq);
        }
        let mut last_seqs: Vec<(&str, u64)> = last_seqs.into_iter().collect();
        last_seqs.sort();
        let mut tx = self.begin().await?;
        let devices: Vec<_> = devices.into_iter().collect();
        for rows in devices.chunks(ROWS) {
            let sql = format!(
                "WITH v(id, status) AS (VALUES {}) UPDATE devices SET status = v.status, status_at = $1, \
                 last_seen = $1 FROM v WHERE devices.id = v.id",
                values(rows.len(), 2, 1, "")
            );
            let mut query = sqlx::query(&sql).bind(now);
            for (id, status) in rows {
                query = query.bind(*id).bind(*status);
            }
            query.execute(&mut *tx).await?;
        }
        let accounts: Vec<_> = accounts.into_iter().collect();
        for rows in accounts.chunks(ROWS) {
            let sql = format!(
                "WITH v(id, status, visible) AS (VALUES {}) UPDATE accounts SET status = v.status, \
                 visible = v.visible FROM v WHERE accounts.id = v.id",
                values(rows.len(), 3, 0, "")
            );
            let mut query = sqlx::query(&sql);
            for (id, (best, shown)) in rows {
                query = query.bind(*id).bind(*best).bind(*shown);
            }
            query.execute(&mut *tx).await?;
        }
        for rows in batch.events.chunks(ROWS) {
            let sql = format!(
                "INSERT INTO events (app_id, seq, uid, status, at) VALUES {}",
                values(rows.len(), 4, 1, "$1")
            );
            let mut query = sqlx::query(&sql).bind(now);
            for event in rows {
                query = query
                    .bind(&*event.app_id)
                    .bind(i64::try_from(event.seq).unwrap_or(i64::MAX))
                    .bind(&*event.uid)
                    .bind(event.status.name());
            }
            query.execute(&mut *tx).await?;
        }
        let told: Vec<_> = told.into_iter().collect();
        for rows in told.chunks(ROWS) {
            let sql = format!(
                "WITH v(uid, status) AS (VALUES {}) UPDATE grants SET last_status = v.status, \
                 last_update_at = $1 FROM v WHERE grants.uid = v.uid",
                values(rows.len(), 2, 1, "")
            );
            let mut query = sqlx::query(&sql).bind(now);
            for (uid, status) in rows {
                query = query.bind(*uid).bind(*status);
            }
            query.execute(&mut *tx).await?;
        }
        for rows in last_seqs.chunks(ROWS) {
            let sql = format!(
                "WITH v(app_id, seq) AS (VALUES {}) UPDATE apps SET last_seq = v.seq FROM v WHERE apps.app_id = v.app_id",
                values(rows.len(), 2, 0, "")
            );
            let mut query = sqlx::query(&sql);
            for (app_id, seq) in rows {
                query = query.bind(*app_id).bind(i64::try_from(*seq).unwrap_or(i64::MAX));
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// A status as grants record what their app was told.
fn status_named(name: &str) -> Option<Status> {
    [Status::Online, Status::Away, Status::Offline].into_iter().find(|status| status.name() == name)
}
