//! Where a test server keeps its data: SQLite in a data directory, or, when `TEST_DATABASE_URL`
//! names a PostgreSQL database, a schema of its own in it per data directory: the same tests run
//! on both.

use std::path::{Path, PathBuf};

/// A data directory that outlives the server that used it.
pub struct DataDir {
    pub path: PathBuf,
    _keep: Option<tempfile::TempDir>,
}

impl DataDir {
    pub fn new() -> DataDir {
        let tempdir = tempfile::tempdir().unwrap();
        DataDir { path: tempdir.path().to_owned(), _keep: Some(tempdir) }
    }

    /// The directory at `path`, removed with `keep` (if any) when dropped.
    pub(super) fn kept(path: PathBuf, keep: Option<tempfile::TempDir>) -> DataDir {
        DataDir { path, _keep: keep }
    }

    /// Everything the database holds (SQLite: the file and its write-ahead log; PostgreSQL:
    /// every row of the schema as text), to search for what must never be stored in clear.
    pub async fn database_bytes(&self) -> Vec<u8> {
        let Some(url) = database_url(&self.path).await else {
            return ["presence.db", "presence.db-wal"]
                .iter()
                .filter_map(|file| std::fs::read(self.path.join(file)).ok())
                .flatten()
                .collect();
        };
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let mut bytes = Vec::new();
        for table in tables {
            let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM \"{table}\" t"))
                .fetch_all(&mut conn)
                .await
                .unwrap();
            bytes.extend(rows.concat().into_bytes());
        }
        bytes
    }

    /// A connection to this directory's PostgreSQL schema; panics on the SQLite run.
    pub async fn postgres(&self) -> sqlx::PgConnection {
        use sqlx::Connection as _;
        let url = database_url(&self.path).await.expect("this is the PostgreSQL run");
        sqlx::PgConnection::connect(&url).await.unwrap()
    }
}

/// The tables of the database of `dir` that have a column named `column`.
pub async fn tables_with_column(dir: &Path, column: &str) -> Vec<String> {
    let sql = if postgres().is_some() {
        "SELECT table_name::text FROM information_schema.columns
         WHERE table_schema = current_schema() AND column_name = $1 ORDER BY 1"
    } else {
        "SELECT m.name FROM sqlite_master m JOIN pragma_table_info(m.name) c
         WHERE m.type = 'table' AND c.name = $1 ORDER BY 1"
    };
    let mut conn = connect(dir).await;
    sqlx::query_scalar(sql).bind(column).fetch_all(&mut conn).await.unwrap()
}

/// How many rows of `table` in the database of `dir` have `column = value`.
pub async fn rows_where(dir: &Path, table: &str, column: &str, value: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM \"{table}\" WHERE CAST({column} AS TEXT) = $1");
    let mut conn = connect(dir).await;
    sqlx::query_scalar(&sql).bind(value).fetch_one(&mut conn).await.unwrap()
}

/// A connection to the database of `dir`, whichever the run uses.
async fn connect(dir: &Path) -> sqlx::AnyConnection {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let url = match database_url(dir).await {
        Some(url) => url,
        None => format!("sqlite://{}?mode=ro", dir.join("presence.db").display()),
    };
    sqlx::AnyConnection::connect(&url).await.unwrap()
}

/// How many rows a table of the database in `dir` holds (SQLite or this run's PostgreSQL schema).
pub async fn count_rows(dir: &Path, table: &str) -> i64 {
    use sqlx::Connection as _;
    let query = format!("SELECT COUNT(*) FROM {table}");
    match database_url(dir).await {
        Some(url) => {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query_scalar(&query).fetch_one(&mut conn).await.unwrap()
        }
        None => {
            let url = format!("sqlite://{}?mode=ro", dir.join("presence.db").display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query_scalar(&query).fetch_one(&mut conn).await.unwrap()
        }
    }
}

/// Connections each test server keeps to PostgreSQL at most: tests run in parallel, and the
/// server's `max_connections` (100 by default) must hold them all.
pub const POOL: u32 = 4;

/// The PostgreSQL database the tests run on, if this is the PostgreSQL run.
pub fn postgres() -> Option<String> {
    std::env::var("TEST_DATABASE_URL").ok().filter(|url| !url.is_empty())
}

/// The database URL for a data directory, or `None` for the default (SQLite inside it). On the
/// PostgreSQL run, the directory's schema is made on first use and named in `<dir>/schema`.
/// Schemas of runs older than a few hours are dropped then, so repeated runs do not pile up.
pub async fn database_url(dir: &Path) -> Option<String> {
    let base = postgres()?;
    let marker = dir.join("schema");
    let schema = match std::fs::read_to_string(&marker) {
        Ok(schema) => schema,
        Err(_) => {
            use sqlx::Connection as _;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
            let schema = format!("t{now}_{}", hex::encode(rand::random::<[u8; 6]>()));
            let mut conn = sqlx::PgConnection::connect(&base).await.expect("TEST_DATABASE_URL is reachable");
            let old: Vec<String> =
                sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname ~ '^t[0-9]+_'")
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
            for name in old {
                let born = name[1..].split('_').next().and_then(|t| t.parse::<u64>().ok()).unwrap_or(now);
                if born + 3 * 3600 < now {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                        .execute(&mut conn)
                        .await;
                }
            }
            sqlx::query(&format!("CREATE SCHEMA \"{schema}\"")).execute(&mut conn).await.unwrap();
            std::fs::write(&marker, &schema).unwrap();
            schema
        }
    };
    let separator = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{separator}options=-c%20search_path%3D{schema}"))
}

/// `--data-dir <dir>`, and the database URL that goes with it on the PostgreSQL run.
pub async fn store_flags(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut flags = vec!["--data-dir".into(), dir.as_os_str().to_owned()];
    if let Some(url) = database_url(dir).await {
        flags.extend([
            "--database-url".into(),
            url.into(),
            "--postgres-max-connections".into(),
            POOL.to_string().into(),
        ]);
    }
    flags
}
