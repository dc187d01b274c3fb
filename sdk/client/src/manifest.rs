//! Owns the function manifest, `nimbus.toml`: its format, strict parsing (an unknown key is an
//! error naming it) and where the wasm it names lives.
//!
//! ```toml
//! name = "classify-image"
//! wasm = "../../target/wasm/wasm32-wasip2/release/classify_image.wasm"   # relative to this file
//! build = "cargo build --release --target wasm32-wasip2"
//! public = false
//! [models]
//! image-classifier = "efficientnet"        # guest-visible name -> model[@version]
//! [env]
//! [limits]
//! memory_mb = 256
//! timeout_ms = 30000
//! concurrency = 64
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::ClientError;

/// The manifest's file name inside a function directory.
pub const MANIFEST_FILE: &str = "nimbus.toml";

/// A function manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The function's name (no `@`, `/` or whitespace: `@` introduces a version when invoking).
    pub name: String,
    /// Path of the built wasm, relative to the manifest's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<PathBuf>,
    /// Shell command that builds the wasm, run in the manifest's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// When true, invoking needs no API key.
    #[serde(default)]
    pub public: bool,
    /// Guest-visible model name -> `model` or `model@version`.
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    /// Environment variables the guest sees.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Resource limits; unset ones take the server's defaults.
    #[serde(default, deserialize_with = "strict_limits")]
    pub limits: Limits,
}

/// Per-function resource limits. Also the shape the server reports back (where unknown fields
/// are tolerated; in a manifest they are errors).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

/// The manifest's `[limits]` table, where a typo must be an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StrictLimits {
    memory_mb: Option<u32>,
    timeout_ms: Option<u64>,
    concurrency: Option<u32>,
}

fn strict_limits<'de, D: Deserializer<'de>>(d: D) -> Result<Limits, D::Error> {
    let s = StrictLimits::deserialize(d)?;
    Ok(Limits {
        memory_mb: s.memory_mb,
        timeout_ms: s.timeout_ms,
        concurrency: s.concurrency,
    })
}

impl Manifest {
    /// Loads `path_or_dir` (a `nimbus.toml`, or a directory holding one). Returns the manifest and
    /// the absolute directory it was found in, which relative paths in it are resolved against.
    pub fn load(path_or_dir: &Path) -> Result<(Manifest, PathBuf), ClientError> {
        let file = if path_or_dir.is_dir() {
            path_or_dir.join(MANIFEST_FILE)
        } else {
            path_or_dir.to_path_buf()
        };
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ClientError::Manifest(if path_or_dir.is_dir() {
                    format!(
                        "no {MANIFEST_FILE} in {}",
                        display_dir(path_or_dir).display()
                    )
                } else {
                    format!("manifest {} does not exist", file.display())
                }));
            }
            Err(e) => {
                return Err(ClientError::io(
                    format!("cannot read {}", file.display()),
                    e,
                ));
            }
        };
        let manifest = parse(&text, &file.display().to_string())?;
        let parent = file.parent().map(display_dir).unwrap_or(Path::new("."));
        let dir = parent
            .canonicalize()
            .map_err(|e| ClientError::io(format!("cannot resolve {}", parent.display()), e))?;
        Ok((manifest, dir))
    }

    /// Parses manifest text (errors say `invalid nimbus.toml: ...`).
    pub fn parse(text: &str) -> Result<Manifest, ClientError> {
        parse(text, MANIFEST_FILE)
    }

    /// Where the wasm named by `wasm` lives, relative paths taken from `dir` (the manifest's
    /// directory). Does not check that it exists.
    pub fn wasm_path(&self, dir: &Path) -> Result<PathBuf, ClientError> {
        match &self.wasm {
            Some(wasm) => Ok(dir.join(wasm)),
            None => Err(ClientError::Manifest(format!(
                "the manifest of `{}` has no `wasm` path (the built .wasm, relative to the manifest)",
                self.name
            ))),
        }
    }
}

/// `""` (the parent of a bare file name) means the current directory.
fn display_dir(p: &Path) -> &Path {
    if p.as_os_str().is_empty() {
        Path::new(".")
    } else {
        p
    }
}

fn parse(text: &str, origin: &str) -> Result<Manifest, ClientError> {
    let manifest: Manifest = toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map(|span| {
                let (line, col) = line_col(text, span.start);
                format!(" (line {line}, column {col})")
            })
            .unwrap_or_default();
        ClientError::Manifest(format!(
            "invalid {origin}: {}{at}",
            e.message().trim().replace('\n', " ")
        ))
    })?;
    let bad = |why: String| ClientError::Manifest(format!("invalid {origin}: {why}"));
    if manifest.name.is_empty() {
        return Err(bad("`name` is empty".into()));
    }
    if let Some(c) = manifest
        .name
        .chars()
        .find(|c| *c == '@' || *c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(bad(format!(
            "`name` {:?} may not contain {c:?}",
            manifest.name
        )));
    }
    if let Some((guest, _)) = manifest.models.iter().find(|(_, m)| m.trim().is_empty()) {
        return Err(bad(format!("model binding `{guest}` names no model")));
    }
    if manifest
        .build
        .as_deref()
        .is_some_and(|b| b.trim().is_empty())
    {
        return Err(bad(
            "`build` is empty (leave it out when there is nothing to build)".into(),
        ));
    }
    Ok(manifest)
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "classify-image"
wasm = "../../target/wasm/wasm32-wasip2/release/classify_image.wasm"   # relative to this file
build = "cargo build --release --target wasm32-wasip2"
public = false
[models]
image-classifier = "efficientnet"
[env]
[limits]
memory_mb = 256
timeout_ms = 30000
concurrency = 64
"#;

    #[test]
    fn parses_the_documented_format() {
        let m = Manifest::parse(GOOD).unwrap();
        assert_eq!(m.name, "classify-image");
        assert_eq!(
            m.wasm.as_deref(),
            Some(Path::new(
                "../../target/wasm/wasm32-wasip2/release/classify_image.wasm"
            ))
        );
        assert_eq!(
            m.build.as_deref(),
            Some("cargo build --release --target wasm32-wasip2")
        );
        assert!(!m.public);
        assert_eq!(m.models["image-classifier"], "efficientnet");
        assert!(m.env.is_empty());
        assert_eq!(
            m.limits,
            Limits {
                memory_mb: Some(256),
                timeout_ms: Some(30000),
                concurrency: Some(64)
            }
        );
    }

    #[test]
    fn minimal_manifest_takes_defaults() {
        let m = Manifest::parse("name = \"hello\"\nwasm = \"hello.wasm\"\n").unwrap();
        assert_eq!(m.name, "hello");
        assert!(m.build.is_none() && !m.public && m.models.is_empty());
        assert_eq!(m.limits, Limits::default());
    }

    #[test]
    fn unknown_field_is_an_error_naming_it() {
        let err = Manifest::parse("name = \"x\"\npubic = true\n").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ClientError::Manifest(_)));
        assert!(msg.contains("unknown field `pubic`"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");

        let err = Manifest::parse("name = \"x\"\n[limits]\nmemory = 5\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `memory`"), "{err}");
    }

    #[test]
    fn missing_name_is_an_error() {
        let err = Manifest::parse("wasm = \"x.wasm\"\n").unwrap_err();
        assert!(err.to_string().contains("missing field `name`"), "{err}");
        let err = Manifest::parse("name = \"\"\n").unwrap_err();
        assert!(err.to_string().contains("`name` is empty"), "{err}");
        let err = Manifest::parse("name = \"a@b\"\n").unwrap_err();
        assert!(err.to_string().contains("may not contain '@'"), "{err}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let err = Manifest::parse("name = \"x\"\n[limits]\nmemory_mb = \"lots\"\n").unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
    }

    #[test]
    fn load_from_dir_or_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), GOOD).unwrap();
        let (m, d) = Manifest::load(dir.path()).unwrap();
        assert_eq!(m.name, "classify-image");
        assert_eq!(d, dir.path().canonicalize().unwrap());
        let (_, d2) = Manifest::load(&dir.path().join(MANIFEST_FILE)).unwrap();
        assert_eq!(d, d2);
        assert!(
            m.wasm_path(&d)
                .unwrap()
                .ends_with("../../target/wasm/wasm32-wasip2/release/classify_image.wasm")
        );

        let empty = tempfile::tempdir().unwrap();
        let err = Manifest::load(empty.path()).unwrap_err();
        assert!(err.to_string().starts_with("no nimbus.toml in "), "{err}");
        let err = Manifest::load(&empty.path().join("other.toml")).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
