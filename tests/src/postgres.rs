//! nimbusd on PostgreSQL in the end-to-end tests. A test that wants PostgreSQL starts nimbusd with
//! [`node_options`] on a database from [`database`]; and with `NIMBUS_E2E_DATABASE=postgres` in
//! the environment, every nimbusd the harness starts without `--database-url` gets a fresh
//! database of its own (kept across restarts of the same data dir), so any suite can run on
//! PostgreSQL: `NIMBUS_E2E_DATABASE=postgres cargo test --release -p nimbus-tests`.

use std::path::Path;

use anyhow::Context;

use crate::NimbusdOptions;

/// The key pepper all nodes of a multi-node test share (64 hex characters).
pub const TEST_PEPPER: &str = "0fa1e5c0ffee0fa1e5c0ffee0fa1e5c0ffee0fa1e5c0ffee0fa1e5c0ffee0fa1";

/// Where a data dir remembers the database the environment switch gave it.
const DATABASE_FILE: &str = ".e2e-database-url";

/// A fresh PostgreSQL database (see the nimbus-test-postgres crate).
pub fn database() -> String {
    nimbus_test_postgres::database()
}

/// Options for a node on the database at `url` with the shared test pepper.
pub fn node_options(url: &str) -> NimbusdOptions {
    NimbusdOptions {
        args: vec![
            "--database-url".into(),
            url.into(),
            "--key-pepper".into(),
            TEST_PEPPER.into(),
        ],
        env: Vec::new(),
    }
}

/// Applies `NIMBUS_E2E_DATABASE=postgres` to the options of a nimbusd about to start in
/// `data_dir` (see the module doc).
pub(crate) fn with_database_from_env(
    mut options: NimbusdOptions,
    data_dir: &Path,
) -> anyhow::Result<NimbusdOptions> {
    let wanted = std::env::var("NIMBUS_E2E_DATABASE").is_ok_and(|v| v == "postgres");
    if !wanted || options.args.iter().any(|a| a == "--database-url") {
        return Ok(options);
    }
    let file = data_dir.join(DATABASE_FILE);
    let url = match std::fs::read_to_string(&file) {
        Ok(url) => url.trim().to_owned(),
        Err(_) => {
            let url = nimbus_test_postgres::try_database()?;
            std::fs::write(&file, &url).with_context(|| format!("writing {}", file.display()))?;
            url
        }
    };
    options.args.extend(["--database-url".to_owned(), url]);
    Ok(options)
}
