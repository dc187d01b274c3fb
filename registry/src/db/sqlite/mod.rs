//! The SQLite backend (the embedded default): WAL, busy timeout, foreign keys; one writer
//! connection and a few read-only ones, each behind a mutex and used from tokio's blocking pool.
//! This module and its children are the only code that knows rusqlite; the statements are the
//! [`Queries`](super::Queries) methods in `queries.rs`, the schema is in `schema.rs`.

mod queries;
mod schema;

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::{Result, Sql, blocking};

/// How long a statement waits for a lock held by another connection or process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Read connections: reads (authentication on every request) never wait behind a write.
const READERS: usize = 4;

/// A borrowed connection, inside a transaction when writing; implements [`super::Queries`].
pub(super) struct SqliteSql<'a>(&'a Connection);

/// The database: one writer and [`READERS`] readers.
pub(super) struct Db {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Write transactions committed through this `Db`, counted after each commit.
    commits: AtomicU64,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

impl Db {
    /// Opens `path` (creating it with mode 0600), applies pending migrations. Blocking.
    pub(super) fn open(path: &Path) -> anyhow::Result<Db> {
        create_private_file(path)?;
        let mut writer = Connection::open(path)
            .with_context(|| format!("opening database {}", path.display()))?;
        configure(&writer)?;
        let mode: String = writer.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        anyhow::ensure!(
            mode.eq_ignore_ascii_case("wal"),
            "database {} cannot use WAL mode (got `{mode}`)",
            path.display()
        );
        writer.pragma_update(None, "synchronous", "FULL")?;
        migrate(&mut writer).with_context(|| format!("migrating {}", path.display()))?;

        let readers = (0..READERS)
            .map(|_| -> anyhow::Result<Mutex<Connection>> {
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                configure(&conn)?;
                conn.pragma_update(None, "query_only", "ON")?;
                Ok(Mutex::new(conn))
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .with_context(|| format!("opening database {}", path.display()))?;
        Ok(Db {
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            commits: AtomicU64::new(0),
        })
    }

    /// Runs `f` on a read connection in the blocking pool.
    pub(super) async fn read<T, F>(self: &std::sync::Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Sql<'_>) -> Result<T> + Send + 'static,
    {
        let db = self.clone();
        blocking(move || {
            let conn = db.reader();
            f(&SqliteSql(&conn))
        })
        .await
    }

    /// Runs `f` in one IMMEDIATE transaction on the writer in the blocking pool; commits when
    /// `f` returns `Ok`, rolls back otherwise.
    pub(super) async fn write<T, F>(self: &std::sync::Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Sql<'_>) -> Result<T> + Send + 'static,
    {
        let db = self.clone();
        blocking(move || {
            let mut conn = lock(&db.writer);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .context("beginning a transaction")?;
            let value = f(&SqliteSql(&tx))?;
            tx.commit().context("committing a transaction")?;
            // Counted here, in the blocking task, so that a caller that stops waiting still
            // counts a commit that happened.
            db.commits.fetch_add(1, Ordering::Release);
            Ok(value)
        })
        .await
    }

    /// Write transactions committed so far (see [`super::Db::local_commits`]).
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Acquire)
    }

    /// A free reader if there is one, else the next in turn (waiting for it).
    fn reader(&self) -> MutexGuard<'_, Connection> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.readers.len() {
            if let Ok(guard) = self.readers[(start + i) % self.readers.len()].try_lock() {
                return guard;
            }
        }
        lock(&self.readers[start % self.readers.len()])
    }
}

/// A mutex guard even when a previous holder panicked: a panic inside a transaction rolls it
/// back when the transaction is dropped, so the connection is still sound.
fn lock(mutex: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn configure(conn: &Connection) -> anyhow::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// The database holds key hashes: keep it (and the -wal/-shm files SQLite derives from its
/// mode) private to the owner.
fn create_private_file(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("creating {}", path.display()))),
    }
}

/// Applies the migrations of [`schema::MIGRATIONS`] that are not yet recorded, each in its own
/// transaction. Refuses a database written by a newer build.
fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version     INTEGER PRIMARY KEY,
            name        TEXT NOT NULL,
            applied_at  INTEGER NOT NULL
        ) STRICT;",
    )?;
    let known = schema::MIGRATIONS.last().map_or(0, |m| m.0);
    for &(version, name, sql) in schema::MIGRATIONS {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: i64 = tx.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )?;
        anyhow::ensure!(
            current <= known,
            "the database is at schema version {current}, newer than this build knows ({known})"
        );
        if current >= version {
            continue;
        }
        tx.execute_batch(sql)
            .with_context(|| format!("migration {version} ({name})"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![version, name, crate::now()],
        )?;
        tx.commit()?;
        tracing::info!(version, name, "applied registry migration");
    }
    Ok(())
}
