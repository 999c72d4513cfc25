//! The roster's verbs: load every account's presence into memory; record a batch of what a
//! lone node's roster applied, as one transaction of at most five multi-row statements (on
//! SQLite prepared once, each with its rows as one JSON argument; on PostgreSQL sent as one
//! text); and a cluster node's batch of reports, locked, read, applied by the same roster and
//! written in four round trips. Neither the statements nor the round trips grow with the batch
//! (a group commit).

use std::collections::{BTreeMap, HashMap};

use futures_util::TryStreamExt as _;
use sqlx::{AnyConnection, Executor as _, Row};

use super::{retrying, Backend, SqlStore, StoreError};
use crate::domain::roster::{AccountPresence, GrantState, Roster};
use crate::domain::{AccountId, DeviceId, PresenceChange, Status};
use crate::store::{PresenceBatch, PresenceLoad};

/// `$1, $2, …` for an `IN` list.
fn list(count: usize) -> String {
    (1..=count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

impl SqlStore {
    /// Reads these accounts' presence (every account's with `None`) and the seqs of their apps
    /// and of `apps`.
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
            let account = account_of(&row);
            found.insert(account.account.0, account);
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
            if let Some(account) = found.get_mut(&row.get::<i64, _>(0)) {
                account.grants.push(grant_of(&row));
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

    /// One batch is one transaction whose statements do not grow with it. On SQLite each
    /// statement is prepared once (the connection keeps it) and takes its rows as one JSON
    /// argument: SQLite neither parses a text of megabytes nor plans it again. On PostgreSQL
    /// the whole transaction is one text of literals (ids the server made, statuses, numbers),
    /// quoted and escaped: one round trip. Recording a batch again changes nothing (the
    /// journal replays what it cannot prove was recorded).
    pub(super) async fn record_roster(&self, batch: &PresenceBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // A second of a busy node's changes is some milliseconds to encode: done on the
        // blocking pool, not on a runtime worker that reports are waiting for.
        let (owned, backend) = (batch.clone(), self.backend);
        let encoded = tokio::task::spawn_blocking(move || match backend {
            Backend::Sqlite => Encoded::Arguments(batch_json(&owned)),
            // PostgreSQL runs a text of several statements as one transaction by itself.
            Backend::Postgres => Encoded::Text(batch_sql(&owned)),
        })
        .await
        .map_err(|_| StoreError::Panicked)?;
        match encoded {
            Encoded::Text(sql) => {
                sqlx::raw_sql(&sql).execute(&self.writer).await?;
            }
            Encoded::Arguments(arguments) => {
                // SQLite's writer is one connection: the transaction holds it, and a failed one
                // leaves it without a half-done transaction.
                let mut conn = self.writer.acquire().await?;
                if let Err(error) = write_json_rows(&mut conn, arguments).await {
                    let _ = conn.execute("ROLLBACK").await;
                    return Err(error.into());
                }
            }
        }
        Ok(())
    }

    /// A cluster node's batch of reports, in four round trips whatever its size: `BEGIN`; one
    /// text that locks and reads the users they touch (in ascending order, then their apps'
    /// logs, so two nodes' batches that share users wait for each other instead of
    /// deadlocking); the domain's roster applies the reports; one text writes what changed;
    /// `COMMIT`.
    pub(super) async fn set_device_statuses(
        &self,
        batch: &[(DeviceId, Status)],
        now: i64,
    ) -> Result<Vec<Option<PresenceChange>>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        retrying(|| async {
            let mut tx = self.begin().await?;
            let lock = if self.backend == Backend::Postgres { " FOR UPDATE" } else { "" };
            let (loaded, owners) = lock_and_read(&mut tx, batch, lock).await?;
            let mut roster = Roster::default();
            loaded.load_into(&mut roster);
            let mut record = PresenceBatch::default();
            let mut changes = Vec::with_capacity(batch.len());
            for (device, status) in batch {
                // A device bound to another node since is that node's to report (this node's late
                // word, say an old connection's grace running out, must not undo it).
                let elsewhere = owners
                    .get(device.as_str())
                    .is_some_and(|node| node.as_deref().is_some_and(|node| node != self.node));
                let applied = if elsewhere { None } else { roster.report(device, *status) };
                let Some(applied) = applied else {
                    changes.push(None);
                    continue;
                };
                record.add(&applied, now);
                changes.push(applied.change(now));
            }
            if !record.is_empty() {
                // A text without arguments: sent as it is, several statements at once.
                tx.execute(batch_sql(&record).as_str()).await?;
            }
            tx.commit().await?;
            Ok(changes)
        })
        .await
    }
}

/// SQLite's transaction of `SQLITE_BATCH` with these rows. (Boxed: the compiler cannot yet
/// prove an unboxed one `Send` for every lifetime of the connection.)
fn write_json_rows(
    conn: &mut AnyConnection,
    arguments: [Option<String>; 5],
) -> futures_util::future::BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        conn.execute("BEGIN IMMEDIATE").await?;
        for (sql, rows) in SQLITE_BATCH.into_iter().zip(arguments) {
            if let Some(rows) = rows {
                sqlx::query(sql).bind(rows).execute(&mut *conn).await?;
            }
        }
        conn.execute("COMMIT").await?;
        Ok(())
    })
}

/// Locks and reads the users these devices belong to, in one text of four statements (one
/// round trip): their accounts (locked in ascending order), devices and grants, and their apps'
/// seqs (locked in ascending order). Also returns the node each device is bound to.
async fn lock_and_read(
    conn: &mut AnyConnection,
    batch: &[(DeviceId, Status)],
    lock: &str,
) -> Result<(PresenceLoad, HashMap<String, Option<String>>), StoreError> {
    let ids: Vec<String> = batch.iter().map(|(device, _)| quoted(device.as_str())).collect();
    let users = format!("SELECT account_id FROM devices WHERE id IN ({})", ids.join(", "));
    let sql = format!(
        "SELECT id, appear_offline, status, visible FROM accounts WHERE id IN ({users}) ORDER BY id{lock};
         SELECT id, account_id, status, node_id FROM devices WHERE account_id IN ({users}) ORDER BY id;
         SELECT account_id, app_id, uid, coarse, enabled, last_status FROM grants
           WHERE account_id IN ({users}) ORDER BY app_id;
         SELECT app_id, last_seq FROM apps
           WHERE app_id IN (SELECT app_id FROM grants WHERE account_id IN ({users})) ORDER BY app_id{lock};"
    );
    let mut found: BTreeMap<i64, AccountPresence> = BTreeMap::new();
    let mut nodes = HashMap::new();
    let mut seqs = Vec::new();
    // Each statement's rows, then its result: `statement` counts the results seen.
    let mut statement = 0;
    let mut results = conn.fetch_many(sql.as_str());
    while let Some(item) = results.try_next().await? {
        let row = match item {
            sqlx::Either::Left(_) => {
                statement += 1;
                continue;
            }
            sqlx::Either::Right(row) => row,
        };
        match statement {
            0 => {
                let account = account_of(&row);
                found.insert(account.account.0, account);
            }
            1 => {
                let id: String = row.get(0);
                let Some(device) = DeviceId::parse(&id) else { continue };
                if let Some(account) = found.get_mut(&row.get::<i64, _>(1)) {
                    account.devices.push((device, Status::from_rank(row.get(2))));
                }
                nodes.insert(id, row.get::<Option<String>, _>(3));
            }
            2 => {
                if let Some(account) = found.get_mut(&row.get::<i64, _>(0)) {
                    account.grants.push(grant_of(&row));
                }
            }
            _ => seqs.push((row.get::<String, _>(0), row.get::<i64, _>(1) as u64)),
        }
    }
    Ok((PresenceLoad { accounts: found.into_values().collect(), seqs }, nodes))
}

/// An account's row: `id, appear_offline, status, visible`.
fn account_of(row: &sqlx::any::AnyRow) -> AccountPresence {
    AccountPresence {
        account: AccountId(row.get(0)),
        appear_offline: row.get::<i64, _>(1) != 0,
        best: Status::from_rank(row.get(2)),
        visible: Status::from_rank(row.get(3)),
        devices: Vec::new(),
        grants: Vec::new(),
    }
}

/// A grant's row: `account_id, app_id, uid, coarse, enabled, last_status`.
fn grant_of(row: &sqlx::any::AnyRow) -> GrantState {
    GrantState {
        app_id: row.get::<&str, _>(1).into(),
        uid: row.get::<&str, _>(2).into(),
        coarse: row.get::<i64, _>(3) != 0,
        enabled: row.get::<i64, _>(4) != 0,
        told: row.get::<Option<&str>, _>(5).and_then(Status::named),
    }
}

/// A text literal.
fn quoted(text: &str) -> String {
    let mut sql = String::with_capacity(text.len() + 2);
    push_quoted(&mut sql, text);
    sql
}

/// Appends `text` as an SQL string literal: quotes doubled, NULs dropped (no literal can end
/// early or smuggle a statement in).
fn push_quoted(sql: &mut String, text: &str) {
    sql.push('\'');
    for c in text.chars() {
        match c {
            '\'' => sql.push_str("''"),
            '\0' => {}
            c => sql.push(c),
        }
    }
    sql.push('\'');
}

/// What a grant's app was told over a batch: the last status and its time, and since when the
/// app has seen the user without a break (`hidden`: the batch had a break, so the time before
/// the batch does not count).
#[derive(Default)]
struct Told {
    status: &'static str,
    at: i64,
    hidden: bool,
    since: Option<i64>,
}

impl Told {
    fn then(&mut self, status: &'static str, at: i64) {
        (self.status, self.at) = (status, at);
        if matches!(status, "online" | "away") {
            self.since = self.since.or(Some(at));
        } else {
            (self.hidden, self.since) = (true, None);
        }
    }
}

/// What a batch leaves in the store: the latest row of each device, account and grant (what
/// its app was told), and each app's last seq. Rows are in a fixed order.
struct Rows<'a> {
    devices: BTreeMap<&'a str, (i64, i64)>,
    accounts: BTreeMap<i64, (i64, i64)>,
    told: BTreeMap<&'a str, Told>,
    last_seqs: BTreeMap<&'a str, u64>,
}

impl<'a> Rows<'a> {
    fn of(batch: &'a PresenceBatch) -> Self {
        let devices = batch
            .devices
            .iter()
            .map(|(device, status, at)| (device.as_str(), (status.rank(), *at)))
            .collect();
        let accounts = batch
            .accounts
            .iter()
            .map(|(account, best, shown)| (account.0, (best.rank(), shown.rank())))
            .collect();
        let mut told: BTreeMap<&str, Told> = BTreeMap::new();
        let mut last_seqs: BTreeMap<&str, u64> = BTreeMap::new();
        for (event, at) in &batch.events {
            told.entry(&event.uid).or_default().then(event.status.name(), *at);
            let seq = last_seqs.entry(&event.app_id).or_insert(0);
            *seq = (*seq).max(event.seq);
        }
        Rows { devices, accounts, told, last_seqs }
    }
}

/// A batch encoded for its backend.
enum Encoded {
    Text(String),
    Arguments([Option<String>; 5]),
}

/// SQLite's statements for a batch, in this order, each taking its rows as one JSON array
/// (`batch_json`). Events of an app already recorded (a replay) or of an app since deleted
/// are skipped, and an app's `last_seq` never goes back.
const SQLITE_BATCH: [&str; 5] = [
    "UPDATE devices SET status = v.value ->> 1, status_at = v.value ->> 2, last_seen = v.value ->> 2 \
     FROM json_each(?1) AS v WHERE devices.id = v.value ->> 0",
    "UPDATE accounts SET status = v.value ->> 1, visible = v.value ->> 2 \
     FROM json_each(?1) AS v WHERE accounts.id = v.value ->> 0",
    // (SQLite needs the WHERE to read ON CONFLICT as the insert's, not the join's.)
    "INSERT INTO events (app_id, seq, uid, status, at) \
     SELECT v.value ->> 0, v.value ->> 1, v.value ->> 2, v.value ->> 3, v.value ->> 4 FROM json_each(?1) AS v \
     WHERE EXISTS (SELECT 1 FROM apps WHERE apps.app_id = v.value ->> 0) ON CONFLICT DO NOTHING",
    "UPDATE grants SET last_status = v.value ->> 1, last_update_at = v.value ->> 2, \
     visible_since = CASE WHEN v.value ->> 3 IS NULL THEN NULL \
       WHEN v.value ->> 4 = 1 THEN COALESCE(visible_since, v.value ->> 3) ELSE v.value ->> 3 END \
     FROM json_each(?1) AS v WHERE grants.uid = v.value ->> 0",
    "UPDATE apps SET last_seq = v.value ->> 1 FROM json_each(?1) AS v \
     WHERE apps.app_id = v.value ->> 0 AND apps.last_seq < v.value ->> 1",
];

/// The rows of `SQLITE_BATCH`'s statements, one JSON array each (`None`: no rows).
fn batch_json(batch: &PresenceBatch) -> [Option<String>; 5] {
    fn array<T: serde::Serialize>(rows: impl ExactSizeIterator<Item = T>) -> Option<String> {
        if rows.len() == 0 {
            return None;
        }
        // Ids, statuses and numbers: serializing them cannot fail.
        serde_json::to_string(&rows.collect::<Vec<T>>()).ok()
    }
    let rows = Rows::of(batch);
    let seq = |seq: u64| i64::try_from(seq).unwrap_or(i64::MAX);
    [
        array(rows.devices.iter().map(|(id, (status, at))| (id, status, at))),
        array(rows.accounts.iter().map(|(id, (best, shown))| (id, best, shown))),
        array(
            batch
                .events
                .iter()
                .map(|(event, at)| (&*event.app_id, seq(event.seq), &*event.uid, event.status.name(), at)),
        ),
        array(
            rows.told
                .iter()
                .map(|(uid, told)| (uid, told.status, told.at, told.since, i64::from(!told.hidden))),
        ),
        array(rows.last_seqs.iter().map(|(app, last)| (app, seq(*last)))),
    ]
}

/// The batch's statements as one text of literals (the caller makes them one transaction):
/// at most five, rows in a fixed order, with the same effect as `SQLITE_BATCH`.
fn batch_sql(batch: &PresenceBatch) -> String {
    use std::fmt::Write as _;
    let Rows { devices, accounts, told, last_seqs } = Rows::of(batch);
    // Rows are written straight into one text (a batch holds up to a second of changes):
    // about 160 bytes per change.
    let mut sql = String::with_capacity(256 + 64 * devices.len() + 160 * batch.events.len());
    // `(` before the first row of a list, `, (` before the others.
    let open = |sql: &mut String, first: bool| sql.push_str(if first { "(" } else { ", (" });
    if !devices.is_empty() {
        sql.push_str("WITH v(id, status, at) AS (VALUES ");
        for (n, (id, (status, at))) in devices.iter().enumerate() {
            open(&mut sql, n == 0);
            push_quoted(&mut sql, id);
            let _ = write!(sql, ", {status}, {at})");
        }
        sql.push_str(
            ") UPDATE devices SET status = v.status, status_at = v.at, last_seen = v.at FROM v WHERE devices.id = v.id;\n",
        );
    }
    if !accounts.is_empty() {
        sql.push_str("WITH v(id, status, visible) AS (VALUES ");
        for (n, (id, (best, shown))) in accounts.iter().enumerate() {
            open(&mut sql, n == 0);
            let _ = write!(sql, "{id}, {best}, {shown})");
        }
        sql.push_str(
            ") UPDATE accounts SET status = v.status, visible = v.visible FROM v WHERE accounts.id = v.id;\n",
        );
    }
    if !batch.events.is_empty() {
        sql.push_str("WITH v(app_id, seq, uid, status, at) AS (VALUES ");
        for (n, (event, at)) in batch.events.iter().enumerate() {
            open(&mut sql, n == 0);
            push_quoted(&mut sql, &event.app_id);
            let _ = write!(sql, ", {}, ", i64::try_from(event.seq).unwrap_or(i64::MAX));
            push_quoted(&mut sql, &event.uid);
            let _ = write!(sql, ", '{}', {at})", event.status.name());
        }
        // (SQLite needs the WHERE to read ON CONFLICT as the insert's, not the join's.)
        sql.push_str(
            ") INSERT INTO events (app_id, seq, uid, status, at) \
             SELECT v.app_id, v.seq, v.uid, v.status, v.at FROM v \
             WHERE EXISTS (SELECT 1 FROM apps WHERE apps.app_id = v.app_id) \
             ON CONFLICT DO NOTHING;\n",
        );
        sql.push_str("WITH v(uid, status, at, since, keep) AS (VALUES ");
        for (n, (uid, told)) in told.iter().enumerate() {
            open(&mut sql, n == 0);
            push_quoted(&mut sql, uid);
            let _ = write!(sql, ", '{}', {}, ", told.status, told.at);
            match told.since {
                Some(since) => {
                    let _ = write!(sql, "{since}");
                }
                None => sql.push_str("NULL"),
            }
            let _ = write!(sql, ", {})", i64::from(!told.hidden));
        }
        let _ = writeln!(
            sql,
            ") UPDATE grants SET last_status = v.status, last_update_at = v.at, \
             visible_since = CASE WHEN v.since IS NULL THEN NULL \
               WHEN v.keep = 1 THEN COALESCE(visible_since, CAST(v.since AS BIGINT)) ELSE CAST(v.since AS BIGINT) END \
             FROM v WHERE grants.uid = v.uid;"
        );
        sql.push_str("WITH v(app_id, seq) AS (VALUES ");
        for (n, (app, seq)) in last_seqs.iter().enumerate() {
            open(&mut sql, n == 0);
            push_quoted(&mut sql, app);
            let _ = write!(sql, ", {})", i64::try_from(*seq).unwrap_or(i64::MAX));
        }
        sql.push_str(
            ") UPDATE apps SET last_seq = v.seq FROM v WHERE apps.app_id = v.app_id AND apps.last_seq < v.seq;\n",
        );
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_cannot_end_their_quotes() {
        assert_eq!(quoted("app_1"), "'app_1'");
        assert_eq!(quoted("x'); DROP TABLE events; --"), "'x''); DROP TABLE events; --'");
        assert_eq!(quoted("a\0b"), "'ab'");
    }

    /// A SQLite store in `dir` with two users (one device and one grant to `app_1` each; the
    /// second grant already visible since 50).
    async fn seeded(dir: &std::path::Path) -> SqlStore {
        let flags = [("data_dir", dir.display().to_string())];
        let config = crate::config::Config::load(None, std::iter::empty(), flags).unwrap();
        let store = SqlStore::open(&config.database_url(), &config, "node-a").await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO accounts (id, email, created_at) VALUES (1, 'owner@x', 0), (7, 'a@x', 0), (8, 'b@x', 0);
             INSERT INTO apps (app_id, owner_id, name, redirect_uris, secret_hash, webhook_secret, created_at)
               VALUES ('app_1', 1, 'app', '[]', 'h', 's', 0);
             INSERT INTO devices (id, account_id, name, prid_hash, created_at)
               VALUES ('d0123456789abcdef01234567', 7, 'a', 'p7', 0), ('d1123456789abcdef01234567', 8, 'b', 'p8', 0);
             INSERT INTO grants (account_id, app_id, uid, created_at, visible_since)
               VALUES (7, 'app_1', 'u''1', 0, NULL), (8, 'app_1', 'u2', 0, 50);",
        )
        .execute(&store.writer)
        .await
        .unwrap();
        store
    }

    type Snapshot = (
        Vec<(String, i64, Option<i64>, Option<i64>)>,
        Vec<(i64, i64, i64)>,
        Vec<(String, Option<String>, Option<i64>, Option<i64>)>,
        Vec<(String, i64, String, String, i64)>,
        Vec<(String, i64)>,
    );

    async fn snapshot(store: &SqlStore) -> Snapshot {
        let pool = &store.pool;
        let sql = "SELECT id, status, status_at, last_seen FROM devices ORDER BY id";
        let devices = sqlx::query_as(sql).fetch_all(pool).await.unwrap();
        let sql = "SELECT id, status, visible FROM accounts ORDER BY id";
        let accounts = sqlx::query_as(sql).fetch_all(pool).await.unwrap();
        let sql = "SELECT uid, last_status, last_update_at, visible_since FROM grants ORDER BY uid";
        let grants = sqlx::query_as(sql).fetch_all(pool).await.unwrap();
        let sql = "SELECT app_id, seq, uid, status, at FROM events ORDER BY app_id, seq";
        let events = sqlx::query_as(sql).fetch_all(pool).await.unwrap();
        let sql = "SELECT app_id, last_seq FROM apps ORDER BY app_id";
        let apps = sqlx::query_as(sql).fetch_all(pool).await.unwrap();
        (devices, accounts, grants, events, apps)
    }

    #[tokio::test]
    async fn sqlites_statements_with_json_rows_record_what_the_text_of_literals_records() {
        use crate::domain::roster::NewEvent;
        use crate::domain::{AccountId, DeviceId, Status};
        let a = DeviceId::parse("d0123456789abcdef01234567").unwrap();
        let b = DeviceId::parse("d1123456789abcdef01234567").unwrap();
        let event = |app: &str, seq, uid: &str, status| {
            (NewEvent { app_id: app.into(), seq, uid: uid.into(), status }, 100 + seq as i64)
        };
        let batch = PresenceBatch {
            devices: vec![(a.clone(), Status::Online, 101), (b, Status::Away, 102), (a, Status::Away, 103)],
            accounts: vec![
                (AccountId(7), Status::Online, Status::Online),
                (AccountId(8), Status::Away, Status::Away),
                (AccountId(7), Status::Away, Status::Away),
            ],
            events: vec![
                event("app_1", 1, "u'1", Status::Online),
                event("app_1", 2, "u2", Status::Away),
                event("app_1", 3, "u'1", Status::Offline),
                event("app_1", 4, "u'1", Status::Away),
                // An app deleted since: its events are not recorded.
                event("app_gone", 9, "u3", Status::Online),
            ],
        };
        let (json_dir, text_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (json, text) = (seeded(json_dir.path()).await, seeded(text_dir.path()).await);
        json.record_roster(&batch).await.unwrap();
        // Recorded again (a replay of the journal), it changes nothing.
        json.record_roster(&batch).await.unwrap();
        let literals = format!("BEGIN IMMEDIATE;\n{}COMMIT;", batch_sql(&batch));
        sqlx::raw_sql(&literals).execute(&text.writer).await.unwrap();
        let recorded = snapshot(&json).await;
        assert_eq!(recorded, snapshot(&text).await);
        let (devices, accounts, grants, events, apps) = recorded;
        assert_eq!(
            devices[0],
            ("d0123456789abcdef01234567".into(), Status::Away.rank(), Some(103), Some(103))
        );
        assert_eq!(
            accounts[1..],
            [(7, Status::Away.rank(), Status::Away.rank()), (8, Status::Away.rank(), Status::Away.rank())]
        );
        // The first user was told offline in between: seen since its return at 104. The second
        // keeps the time it was first seen.
        assert_eq!(grants[0], ("u'1".into(), Some("away".into()), Some(104), Some(104)));
        assert_eq!(grants[1], ("u2".into(), Some("away".into()), Some(102), Some(50)));
        assert_eq!(events.iter().map(|e| e.1).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(apps, [("app_1".to_string(), 4)]);
    }

    #[test]
    fn a_batch_is_the_latest_row_of_each_device_account_and_grant_and_every_event() {
        use crate::domain::roster::NewEvent;
        use crate::domain::{AccountId, DeviceId, Status};
        let device = DeviceId::parse("d0123456789abcdef01234567").unwrap();
        let event = |seq, uid: &str, status| {
            (NewEvent { app_id: "app_1".into(), seq, uid: uid.into(), status }, 100 + seq as i64)
        };
        let batch = PresenceBatch {
            devices: vec![(device.clone(), Status::Online, 101), (device, Status::Away, 102)],
            accounts: vec![
                (AccountId(7), Status::Online, Status::Online),
                (AccountId(7), Status::Away, Status::Away),
            ],
            events: vec![
                event(1, "u'1", Status::Online),
                event(2, "u'1", Status::Away),
                event(3, "u2", Status::Offline),
            ],
        };
        let sql = batch_sql(&batch);
        let values: Vec<&str> = sql.lines().map(|line| line.split(") UPDATE").next().unwrap()).collect();
        assert_eq!(
            values[..2],
            [
                "WITH v(id, status, at) AS (VALUES ('d0123456789abcdef01234567', 1, 102)",
                "WITH v(id, status, visible) AS (VALUES (7, 1, 1)",
            ]
        );
        assert!(values[2].starts_with(
            "WITH v(app_id, seq, uid, status, at) AS (VALUES ('app_1', 1, 'u''1', 'online', 101), \
             ('app_1', 2, 'u''1', 'away', 102), ('app_1', 3, 'u2', 'offline', 103)) INSERT INTO events"
        ));
        // The grant seen online then away was visible since the first; the one told offline is not.
        assert_eq!(values[3], "WITH v(uid, status, at, since, keep) AS (VALUES ('u''1', 'away', 102, 101, 1), ('u2', 'offline', 103, NULL, 0)");
        assert_eq!(values[4], "WITH v(app_id, seq) AS (VALUES ('app_1', 3)");
        assert_eq!(values.len(), 5);
    }
}
