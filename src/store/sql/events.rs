//! The apps' event logs: appending what an app is told of a user (with the domain's view of
//! the status), reading after a cursor, snapshots, lookups, and retention.

use sqlx::{AnyConnection, Row};

use super::SqlStore;
use crate::domain::presence::app_view;
use crate::domain::{AppEvent, Event, Status};
use crate::store::{EventPage, LogBounds, Snapshot, StoreError, UidStatus};

/// Appends one event to the app's log with the next seq, and notes it on the grant.
pub(super) async fn append_event(
    conn: &mut AnyConnection,
    app_id: &str,
    uid: &str,
    status: &str,
    now: i64,
) -> Result<AppEvent, StoreError> {
    let seq: i64 =
        sqlx::query_scalar("UPDATE apps SET last_seq = last_seq + 1 WHERE app_id = $1 RETURNING last_seq")
            .bind(app_id)
            .fetch_one(&mut *conn)
            .await?;
    sqlx::query("INSERT INTO events (app_id, seq, uid, status, at) VALUES ($1, $2, $3, $4, $5)")
        .bind(app_id)
        .bind(seq)
        .bind(uid)
        .bind(status)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE grants SET last_status = $3, last_update_at = $4,
             visible_since = CASE WHEN $3 IN ('online', 'away') THEN COALESCE(visible_since, $4) END
         WHERE app_id = $1 AND uid = $2",
    )
    .bind(app_id)
    .bind(uid)
    .bind(status)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(AppEvent { app_id: app_id.to_owned(), seq: seq as u64 })
}

/// Appends an event to every enabled grant of the account whose view of it changed.
pub(super) async fn tell_apps(
    conn: &mut AnyConnection,
    account: i64,
    visible: Status,
    now: i64,
) -> Result<Vec<AppEvent>, StoreError> {
    let grants = sqlx::query(
        "SELECT app_id, uid, coarse, last_status FROM grants WHERE account_id = $1 AND enabled = 1 ORDER BY app_id",
    )
    .bind(account)
    .fetch_all(&mut *conn)
    .await?;
    let mut events = Vec::new();
    for grant in grants {
        let (app_id, uid): (String, String) = (grant.get(0), grant.get(1));
        let view = app_view(visible, grant.get::<i64, _>(2) != 0).name();
        if grant.get::<Option<&str>, _>(3) == Some(view) {
            continue;
        }
        events.push(append_event(conn, &app_id, &uid, view, now).await?);
    }
    Ok(events)
}

/// Tells one grant's app the user's current status, if it does not know it yet.
pub(super) async fn tell_app(
    conn: &mut AnyConnection,
    account: i64,
    app_id: &str,
    now: i64,
) -> Result<Vec<AppEvent>, StoreError> {
    let Some(row) = sqlx::query(
        "SELECT g.uid, g.coarse, g.last_status, a.visible FROM grants g JOIN accounts a ON a.id = g.account_id
         WHERE g.account_id = $1 AND g.app_id = $2 AND g.enabled = 1",
    )
    .bind(account)
    .bind(app_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(Vec::new());
    };
    let uid: String = row.get(0);
    let view = app_view(Status::from_rank(row.get(3)), row.get::<i64, _>(1) != 0).name();
    if row.get::<Option<&str>, _>(2) == Some(view) {
        return Ok(Vec::new());
    }
    Ok(vec![append_event(conn, app_id, &uid, view, now).await?])
}

impl SqlStore {
    pub(super) async fn log_bounds(&self, app_id: &str) -> Result<Option<LogBounds>, StoreError> {
        let row = sqlx::query("SELECT last_seq, purged_seq FROM apps WHERE app_id = $1")
            .bind(app_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| LogBounds {
            last_seq: row.get::<i64, _>(0) as u64,
            purged_seq: row.get::<i64, _>(1) as u64,
        }))
    }

    pub(super) async fn events_after(
        &self,
        app_id: &str,
        since: u64,
        limit: u32,
    ) -> Result<EventPage, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Read the bound first: every event up to it is committed (seqs are given under the
        // app row's write lock), so nothing below it can appear later.
        let Some(last_seq) = sqlx::query_scalar::<_, i64>("SELECT last_seq FROM apps WHERE app_id = $1")
            .bind(app_id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(EventPage::default());
        };
        let rows = sqlx::query(
            "SELECT e.seq, e.uid, e.status, e.at, g.enabled, g.hidden_through FROM events e
             LEFT JOIN grants g ON g.app_id = e.app_id AND g.uid = e.uid
             WHERE e.app_id = $1 AND e.seq > $2 AND e.seq <= $3
             ORDER BY e.seq LIMIT $4",
        )
        .bind(app_id)
        .bind(since as i64)
        .bind(last_seq)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let full = rows.len() == limit as usize;
        let mut page = EventPage {
            events: Vec::with_capacity(rows.len()),
            scanned_to: last_seq.max(since as i64) as u64,
            complete: !full,
        };
        for row in rows {
            let event = Event {
                seq: row.get::<i64, _>(0) as u64,
                uid: row.get(1),
                status: row.get(2),
                at: row.get(3),
            };
            if full {
                page.scanned_to = event.seq;
            }
            // A revoked user's (no grant) and a paused user's events are withheld, and so are
            // those a pause withheld for good, once the grant is resumed.
            let (enabled, hidden_through): (Option<i64>, Option<i64>) = (row.get(4), row.get(5));
            let shown = enabled == Some(1) && hidden_through.is_some_and(|hidden| event.seq as i64 > hidden);
            if event.status == "revoked" || shown {
                page.events.push(event);
            }
        }
        Ok(page)
    }

    pub(super) async fn snapshot(&self, app_id: &str) -> Result<Snapshot, StoreError> {
        let mut tx = self.pool.begin().await?;
        let last_seq: i64 = sqlx::query_scalar("SELECT last_seq FROM apps WHERE app_id = $1")
            .bind(app_id)
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or(0);
        let rows = sqlx::query(
            "SELECT uid, last_status, last_update_at FROM grants
             WHERE app_id = $1 AND enabled = 1 AND last_status IS NOT NULL ORDER BY uid",
        )
        .bind(app_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Snapshot {
            entries: rows
                .into_iter()
                .map(|row| UidStatus { uid: row.get(0), status: row.get(1), at: row.get(2) })
                .collect(),
            seq: last_seq as u64,
        })
    }

    pub(super) async fn presence_of(
        &self,
        app_id: &str,
        uids: &[String],
    ) -> Result<Vec<UidStatus>, StoreError> {
        let mut found = Vec::new();
        for uid in uids {
            let row = sqlx::query(
                "SELECT last_status, last_update_at FROM grants WHERE app_id = $1 AND uid = $2 AND enabled = 1",
            )
            .bind(app_id)
            .bind(uid)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = row {
                let status: Option<String> = row.get(0);
                let status = status.unwrap_or_else(|| Status::Offline.name().to_owned());
                found.push(UidStatus { uid: uid.clone(), status, at: row.get(1) });
            }
        }
        Ok(found)
    }

    pub(super) async fn purge_events(&self, cutoff: i64) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE apps SET purged_seq = purged.seq
             FROM (SELECT app_id, MAX(seq) AS seq FROM events WHERE at < $1 GROUP BY app_id) purged
             WHERE purged.app_id = apps.app_id AND purged.seq > apps.purged_seq",
        )
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
        let removed = sqlx::query("DELETE FROM events WHERE at < $1")
            .bind(cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(removed)
    }
}
