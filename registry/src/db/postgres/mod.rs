//! The PostgreSQL backend (`--database-url postgres://...`), for many nodes on one database.
//! This module and its children are the only code that knows tokio-postgres: a small
//! deadpool pool of connections, the versioned migrations of `schema.rs`, and the statements of
//! `queries.rs` (the [`Queries`](super::Queries) methods).
//!
//! The registry's logic is synchronous code run off the async workers (as for SQLite); here each
//! statement of it is driven with `Handle::block_on` from the blocking thread, over a connection
//! checked out of the pool. Every write transaction first takes one transaction-scoped advisory
//! lock ([`WRITE_LOCK`]), so writes from all nodes are serialized as SQLite's single writer
//! serializes them (control-plane writes are few and short); reads take no lock. Migrations run
//! under the same lock, so nodes starting together migrate once.
//!
//! Connections are plain TCP (no TLS): run the database on a private network, or add TLS here.

mod queries;
mod schema;

use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::runtime::Handle;
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;

use super::{Result, Sql, blocking};
use crate::RegistryError;

/// Connections one node keeps open at most.
const POOL_SIZE: usize = 16;
/// How long a request waits for a free connection, and for a new one to be made.
const POOL_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect timeout when the URL sets none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The advisory lock every write transaction takes first ("NIMBUS" + 1).
const WRITE_LOCK: i64 = 0x4e49_4d42_5553_0001;

/// A connection inside a [`Db::read`] (no transaction) or a [`Db::write`] (in one).
pub(super) struct PgSql<'a> {
    rt: &'a Handle,
    conn: Conn<'a>,
}

enum Conn<'a> {
    Client(&'a deadpool_postgres::ClientWrapper),
    Tx(&'a deadpool_postgres::Transaction<'a>),
}

/// The database: a pool of connections.
pub(super) struct Db {
    pool: Pool,
}

impl Db {
    /// Connects (checking the server answers) and applies pending migrations.
    pub(super) async fn open(url: &str) -> anyhow::Result<Db> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .context("the database URL is not a valid PostgreSQL connection string")?;
        if config.get_ssl_mode() == SslMode::Require {
            anyhow::bail!(
                "the database URL asks for sslmode=require, but nimbusd connects to PostgreSQL \
                 without TLS: use sslmode=disable (or prefer) on a private network"
            );
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("nimbusd");
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .context("creating the PostgreSQL connection pool")?;
        let mut client = pool.get().await.context("connecting to PostgreSQL")?;
        schema::migrate(&mut client).await?;
        Ok(Db { pool })
    }

    /// Runs `f` on a pooled connection in the blocking pool.
    pub(super) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Sql<'_>) -> Result<T> + Send + 'static,
    {
        let client = self.connection().await?;
        let rt = Handle::current();
        blocking(move || {
            f(&PgSql {
                rt: &rt,
                conn: Conn::Client(&client),
            })
        })
        .await
    }

    /// Runs `f` in one transaction holding [`WRITE_LOCK`], in the blocking pool; commits when
    /// `f` returns `Ok`, rolls back otherwise (a dropped transaction rolls back).
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Sql<'_>) -> Result<T> + Send + 'static,
    {
        let mut client = self.connection().await?;
        let rt = Handle::current();
        blocking(move || {
            let tx = rt
                .block_on(async {
                    let tx = client.transaction().await?;
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
                        .await?;
                    Ok::<_, tokio_postgres::Error>(tx)
                })
                .context("database: beginning a write transaction")?;
            let value = f(&PgSql {
                rt: &rt,
                conn: Conn::Tx(&tx),
            })?;
            rt.block_on(tx.commit())
                .context("database: committing a transaction")?;
            Ok(value)
        })
        .await
    }

    async fn connection(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            RegistryError::Internal(
                anyhow::Error::new(e).context("database: no PostgreSQL connection available"),
            )
        })
    }
}
