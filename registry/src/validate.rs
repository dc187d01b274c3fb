//! Input rules: names, digests, versions, references, engines, targets, env and limits.
//! Everything a caller sends passes through here before it reaches SQL or a file path.

use std::collections::BTreeMap;

use crate::{Limits, RegistryError};

/// The rule for tenant, model and function names, as shown in error messages.
pub const NAME_RULE: &str = "[a-z0-9][a-z0-9._-]{0,62}";
/// Engines a model may name.
pub const ENGINES: &[&str] = &["onnxruntime", "openvino"];
/// Execution targets a model may name.
pub const TARGETS: &[&str] = &["cpu", "gpu", "auto"];
/// The alias that every deploy moves.
pub const LATEST: &str = "latest";

/// Whether `s` matches [`NAME_RULE`].
pub fn is_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    (1..=63).contains(&bytes.len())
        && matches!(bytes[0], b'a'..=b'z' | b'0'..=b'9')
        && bytes[1..]
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

/// `Ok` when `s` is a valid name of a `kind` ("tenant", "model", "function", "alias").
pub(crate) fn name(kind: &str, s: &str) -> Result<(), RegistryError> {
    if is_name(s) {
        Ok(())
    } else {
        Err(RegistryError::BadRequest(format!(
            "invalid {kind} name `{}`: names must match {NAME_RULE}",
            shorten(s)
        )))
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `s` is a sha256 digest: 64 lowercase hex characters.
pub fn is_digest(s: &str) -> bool {
    is_lower_hex(s, 64)
}

/// Whether `s` has the form of a version: 12 lowercase hex characters.
pub fn is_version(s: &str) -> bool {
    is_lower_hex(s, 12)
}

/// `Ok` when `s` is a sha256 digest; checked before any digest is used in a path or query.
pub(crate) fn digest(s: &str) -> Result<(), RegistryError> {
    if is_digest(s) {
        Ok(())
    } else {
        Err(RegistryError::BadRequest(format!(
            "`{}` is not a sha256 digest (64 lowercase hex characters)",
            shorten(s)
        )))
    }
}

/// Splits a model reference `name` or `name@version` (version: 12 hex, or a full 64-hex digest).
pub(crate) fn model_ref(reference: &str) -> Result<(&str, Option<&str>), RegistryError> {
    let (name_part, version) = match reference.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (reference, None),
    };
    name("model", name_part)?;
    if let Some(v) = version
        && !is_version(v)
        && !is_digest(v)
    {
        return Err(RegistryError::BadRequest(format!(
            "invalid model reference `{}`: expected `name` or `name@version` (version: 12 lowercase hex characters)",
            shorten(reference)
        )));
    }
    Ok((name_part, version))
}

pub(crate) fn engine(s: &str) -> Result<(), RegistryError> {
    one_of("engine", s, ENGINES)
}

pub(crate) fn target(s: &str) -> Result<(), RegistryError> {
    one_of("target", s, TARGETS)
}

fn one_of(what: &str, s: &str, allowed: &[&str]) -> Result<(), RegistryError> {
    if allowed.contains(&s) {
        Ok(())
    } else {
        Err(RegistryError::BadRequest(format!(
            "unknown {what} `{}`: expected one of {}",
            shorten(s),
            allowed.join(", ")
        )))
    }
}

/// Guest-visible model names: `[A-Za-z0-9][A-Za-z0-9._-]{0,127}` (looser than [`NAME_RULE`]
/// because guests pick them, e.g. `mobilenet_v2` or `Encoder`).
pub(crate) fn guest_model_name(s: &str) -> Result<(), RegistryError> {
    let bytes = s.as_bytes();
    let ok = (1..=128).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::BadRequest(format!(
            "invalid guest model name `{}`: must match [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}",
            shorten(s)
        )))
    }
}

/// Env keys `[A-Za-z_][A-Za-z0-9_]*` (at most 128 bytes); values without NUL (at most 32 KiB).
pub(crate) fn env(env: &BTreeMap<String, String>) -> Result<(), RegistryError> {
    for (key, value) in env {
        let bytes = key.as_bytes();
        let key_ok = (1..=128).contains(&bytes.len())
            && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_');
        if !key_ok {
            return Err(RegistryError::BadRequest(format!(
                "invalid env name `{}`: must match [A-Za-z_][A-Za-z0-9_]* (at most 128 characters)",
                shorten(key)
            )));
        }
        if value.len() > 32 * 1024 || value.contains('\0') {
            return Err(RegistryError::BadRequest(format!(
                "invalid value of env `{key}`: at most 32 KiB and no NUL characters"
            )));
        }
    }
    Ok(())
}

/// Limits, when given, are positive.
pub(crate) fn limits(limits: &Limits) -> Result<(), RegistryError> {
    let zero = [
        ("memory_mb", limits.memory_mb == Some(0)),
        ("timeout_ms", limits.timeout_ms == Some(0)),
        ("concurrency", limits.concurrency == Some(0)),
    ];
    match zero.iter().find(|(_, is_zero)| *is_zero) {
        Some((field, _)) => Err(RegistryError::BadRequest(format!(
            "invalid limits: `{field}` must be positive (leave it out for the platform default)"
        ))),
        None => Ok(()),
    }
}

/// Caps user input echoed in error messages.
pub(crate) fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}...")
    }
}
