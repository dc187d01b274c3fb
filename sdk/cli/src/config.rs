//! Owns where the connection settings come from: the API key falls back to the admin key a
//! local nimbusd writes (`<NIMBUS_DATA_DIR or ./.nimbus>/admin.key`), so a local quickstart works
//! without configuration. (`--url`/`--api-key` and their NIMBUS_* variables are read by clap.)

use std::path::{Path, PathBuf};

/// The key file a nimbusd writes into its data directory on first start.
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// The data directory a local nimbusd uses: NIMBUS_DATA_DIR, else `./.nimbus`.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("NIMBUS_DATA_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(".nimbus"),
    }
}

/// The API key to use: the one given (flag or NIMBUS_API_KEY) when not empty, else the admin key
/// file in `data_dir` when it exists. An unreadable key file is reported as a warning, and the
/// command goes on without a key (public functions need none).
pub fn resolve_api_key(given: Option<String>, data_dir: &Path) -> (Option<String>, Option<String>) {
    if let Some(key) = given.map(|k| k.trim().to_string())
        && !key.is_empty()
    {
        return (Some(key), None);
    }
    let path = data_dir.join(ADMIN_KEY_FILE);
    if !path.exists() {
        return (None, None);
    }
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let key = text.trim();
            if key.is_empty() {
                (
                    None,
                    Some(format!(
                        "{} is empty; continuing without an API key",
                        path.display()
                    )),
                )
            } else {
                (Some(key.to_string()), None)
            }
        }
        Err(e) => (
            None,
            Some(format!(
                "cannot read {}: {e}; continuing without an API key",
                path.display()
            )),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_key_wins_then_admin_key_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve_api_key(None, dir.path()), (None, None));
        std::fs::write(dir.path().join(ADMIN_KEY_FILE), "nmb_admin_secret\n").unwrap();
        assert_eq!(
            resolve_api_key(None, dir.path()).0.as_deref(),
            Some("nmb_admin_secret")
        );
        assert_eq!(
            resolve_api_key(Some("".into()), dir.path()).0.as_deref(),
            Some("nmb_admin_secret")
        );
        assert_eq!(
            resolve_api_key(Some("nmb_x_y".into()), dir.path())
                .0
                .as_deref(),
            Some("nmb_x_y")
        );
        std::fs::write(dir.path().join(ADMIN_KEY_FILE), " \n").unwrap();
        let (key, warning) = resolve_api_key(None, dir.path());
        assert!(key.is_none() && warning.unwrap().contains("is empty"));
    }
}
