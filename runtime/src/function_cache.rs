//! Function versions this node has resolved (`tenant`, `name`, `@version|@alias`), kept in memory
//! so that an invocation does not ask the database again, when that is safe: only while this
//! process is the registry's only writer (the embedded SQLite of its data dir), and only as long
//! as no write has been committed since the entry was read ([`Registry::local_commits`]). A deploy,
//! an alias move, a rollback or a deletion therefore takes effect on the next invocation, as
//! without the cache. With PostgreSQL (several nodes write) nothing is cached.
//!
//! What it saves is a database read on tokio's blocking pool per invocation: a handoff to another
//! thread and back, which on a small machine is a large share of a small function's cost (see
//! docs/benchmarks.md).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use nimbus_registry::{FunctionVersion, Registry, RegistryError};

/// Entries at most; past it the cache starts again empty (names are bounded by what the
/// registry resolves, so this only bounds memory against very many functions).
const MAX_ENTRIES: usize = 10_000;

struct Entry {
    /// `Registry::local_commits` before the read that produced `version`.
    commits: u64,
    version: Arc<FunctionVersion>,
}

/// The node's resolved function versions.
#[derive(Default)]
pub struct FunctionCache {
    entries: RwLock<HashMap<String, Entry>>,
}

impl FunctionCache {
    /// `registry.resolve_function(tenant, name, selector)`, answered from memory when the
    /// registry has committed nothing since the same question was last read.
    pub async fn resolve(
        &self,
        registry: &Registry,
        tenant: &str,
        name: &str,
        selector: Option<&str>,
    ) -> Result<FunctionVersion, RegistryError> {
        let Some(commits) = registry.local_commits() else {
            return registry.resolve_function(tenant, name, selector).await;
        };
        // Parts joined with NUL, which no part can hold (an HTTP request line cannot carry it).
        let key = format!("{tenant}\0{name}\0{}", selector.unwrap_or_default());
        if let Some(entry) = self
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            && entry.commits == commits
        {
            return Ok((*entry.version).clone());
        }
        // Read after taking `commits`: a write committed in between makes this entry stale at
        // once (its count moves past `commits`), never a stale entry look current.
        let version = registry.resolve_function(tenant, name, selector).await?;
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            key,
            Entry {
                commits,
                version: Arc::new(version.clone()),
            },
        );
        Ok(version)
    }
}
