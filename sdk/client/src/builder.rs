//! Owns building a function: running the manifest's `build` command and locating the wasm it
//! produces.
//!
//! The command runs as `sh -c <build>` in the manifest's directory, its output going to stderr (so
//! a CLI's stdout stays machine-readable). Unless the caller set `CARGO_TARGET_DIR`, it is pointed
//! at `<repo root>/target/wasm`, so every function of a repository shares one guest build cache
//! and the manifests' `wasm` paths can name it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::ClientError;
use crate::manifest::Manifest;

/// Runs `manifest.build` (when set) in `dir`, the manifest's directory, then returns the path of
/// the wasm the manifest names, erroring if the command fails or the file is not there.
pub fn build_function(manifest: &Manifest, dir: &Path) -> Result<PathBuf, ClientError> {
    let wasm = manifest.wasm_path(dir)?;
    match &manifest.build {
        Some(cmd) => {
            let mut command = Command::new("sh");
            command
                .arg("-c")
                .arg(cmd)
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::from(std::io::stderr()));
            if std::env::var_os("CARGO_TARGET_DIR").is_none()
                && let Some(root) = find_repo_root(dir)
            {
                command.env("CARGO_TARGET_DIR", root.join("target").join("wasm"));
            }
            let status = command.status().map_err(|e| {
                ClientError::Build(format!(
                    "cannot run the build of `{}` (`sh -c {cmd:?}` in {}): {e}",
                    manifest.name,
                    dir.display()
                ))
            })?;
            if !status.success() {
                return Err(ClientError::Build(format!(
                    "the build of `{}` failed: `{cmd}` in {} ended with {status}",
                    manifest.name,
                    dir.display()
                )));
            }
            if !wasm.is_file() {
                return Err(ClientError::Build(format!(
                    "the build of `{}` succeeded but its wasm {} does not exist; check `wasm` in its manifest",
                    manifest.name,
                    wasm.display()
                )));
            }
        }
        None => {
            if !wasm.is_file() {
                return Err(ClientError::Build(format!(
                    "the wasm of `{}`, {}, does not exist, and its manifest has no `build` command: build it first",
                    manifest.name,
                    wasm.display()
                )));
            }
        }
    }
    Ok(wasm.canonicalize().unwrap_or(wasm))
}

/// The repository root above `start`: the nearest ancestor (or `start` itself) holding a
/// `Cargo.toml` with a `[workspace]` table and a `.git`; outside a git checkout, the nearest
/// one with a `README.md`. Nested guest workspaces (even with a README of their own) are passed
/// over inside a checkout.
pub fn find_repo_root(start: &Path) -> Option<PathBuf> {
    let start = start.canonicalize().ok()?;
    let root_with = |marker: &dyn Fn(&Path) -> bool| {
        start
            .ancestors()
            .find(|dir| is_workspace_manifest(&dir.join("Cargo.toml")) && marker(dir))
            .map(Path::to_path_buf)
    };
    root_with(&|dir| dir.join(".git").exists())
        .or_else(|| root_with(&|dir| dir.join("README.md").is_file()))
}

fn is_workspace_manifest(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .is_some_and(|table| table.contains_key("workspace"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn missing_wasm_without_build_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::parse("name = \"hello\"\nwasm = \"hello.wasm\"\n").unwrap();
        let err = build_function(&m, dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ClientError::Build(_)));
        assert!(msg.contains("hello.wasm"), "{msg}");
        assert!(msg.contains("does not exist"), "{msg}");
        assert!(msg.contains("no `build` command"), "{msg}");

        fs::write(dir.path().join("hello.wasm"), b"\0asm").unwrap();
        let wasm = build_function(&m, dir.path()).unwrap();
        assert_eq!(wasm, dir.path().join("hello.wasm").canonicalize().unwrap());
    }

    #[test]
    fn no_wasm_path_is_a_manifest_error() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::parse("name = \"hello\"\n").unwrap();
        let err = build_function(&m, dir.path()).unwrap_err();
        assert!(matches!(err, ClientError::Manifest(_)));
        assert!(err.to_string().contains("no `wasm` path"), "{err}");
    }

    #[test]
    fn build_runs_in_dir_with_shared_target_dir() {
        let root = tempfile::tempdir().unwrap();
        fs::write(
            root.path().join("Cargo.toml"),
            "[workspace]\nmembers = []\n",
        )
        .unwrap();
        fs::create_dir(root.path().join(".git")).unwrap();
        // A nested guest workspace, even with a README of its own (tests/guests has one), is
        // not the root of a checkout.
        let functions = root.path().join("functions");
        fs::create_dir_all(functions.join("hello")).unwrap();
        fs::write(functions.join("Cargo.toml"), "[workspace]\n").unwrap();
        fs::write(functions.join("README.md"), "guests\n").unwrap();
        let dir = functions.join("hello");
        let m = Manifest::parse(
            "name = \"hello\"\nwasm = \"out/hello.wasm\"\n\
             build = \"mkdir -p out && printf %s \\\"$CARGO_TARGET_DIR\\\" > out/hello.wasm\"\n",
        )
        .unwrap();
        let wasm = build_function(&m, &dir).unwrap();
        let root = root.path().canonicalize().unwrap();
        assert_eq!(find_repo_root(&dir).as_deref(), Some(root.as_path()));
        let expected = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(set) => PathBuf::from(set),
            None => root.join("target").join("wasm"),
        };
        assert_eq!(
            fs::read_to_string(&wasm).unwrap(),
            expected.to_str().unwrap()
        );
    }

    #[test]
    fn failing_or_silent_build_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::parse("name = \"hello\"\nwasm = \"hello.wasm\"\nbuild = \"exit 3\"\n")
            .unwrap();
        let err = build_function(&m, dir.path()).unwrap_err().to_string();
        assert!(err.contains("the build of `hello` failed"), "{err}");
        assert!(err.contains("exit status: 3"), "{err}");

        let m =
            Manifest::parse("name = \"hello\"\nwasm = \"hello.wasm\"\nbuild = \"true\"\n").unwrap();
        let err = build_function(&m, dir.path()).unwrap_err().to_string();
        assert!(err.contains("succeeded but its wasm"), "{err}");
    }

    #[test]
    fn no_repo_root_outside_a_workspace() {
        let dir = tempfile::tempdir().unwrap();
        // Temp dirs normally live outside any workspace with a .git; if not, this is vacuous.
        if let Some(root) = find_repo_root(dir.path()) {
            assert!(dir.path().canonicalize().unwrap().starts_with(root));
        }
    }
}
