//! The canonical form of a function version, whose sha256 is the version's identity.
//!
//! The form is the JSON of a fixed structure with a format tag, fields in a fixed order, maps
//! sorted by key and absent limits written as `null`. It is spelled out here, apart from the
//! public records, so that changing how records serialize never changes a version. Changing this
//! form changes every version: don't; add a new format tag instead.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{Limits, ModelBinding};

const FORMAT: &str = "nimbus.function.v1";

#[derive(Serialize)]
struct Form<'a> {
    format: &'static str,
    wasm_sha256: &'a str,
    models: BTreeMap<&'a str, Binding<'a>>,
    env: &'a BTreeMap<String, String>,
    limits: FormLimits,
    public: bool,
}

#[derive(Serialize)]
struct Binding<'a> {
    model: &'a str,
    version: &'a str,
    sha256: &'a str,
    engine: &'a str,
    target: &'a str,
}

#[derive(Serialize)]
struct FormLimits {
    memory_mb: Option<u32>,
    timeout_ms: Option<u64>,
    concurrency: Option<u32>,
}

/// The full digest (64 hex) of a function version; its version is the first 12 characters.
pub(crate) fn function_digest(
    wasm_sha256: &str,
    models: &BTreeMap<String, ModelBinding>,
    env: &BTreeMap<String, String>,
    limits: &Limits,
    public: bool,
) -> String {
    let form = Form {
        format: FORMAT,
        wasm_sha256,
        models: models
            .iter()
            .map(|(guest_name, b)| {
                let binding = Binding {
                    model: &b.model,
                    version: &b.version,
                    sha256: &b.sha256,
                    engine: &b.engine,
                    target: &b.target,
                };
                (guest_name.as_str(), binding)
            })
            .collect(),
        env,
        limits: FormLimits {
            memory_mb: limits.memory_mb,
            timeout_ms: limits.timeout_ms,
            concurrency: limits.concurrency,
        },
        public,
    };
    let bytes = serde_json::to_vec(&form).expect("the canonical form always serializes");
    hex::encode(Sha256::digest(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the form: if this digest changes, every deployed function's version changes.
    #[test]
    fn canonical_form_is_stable() {
        let wasm = "a".repeat(64);
        let mut models = BTreeMap::new();
        models.insert(
            "net".to_string(),
            ModelBinding {
                model: "resnet".into(),
                version: "b".repeat(12),
                sha256: "b".repeat(64),
                uri: None,
                engine: "onnxruntime".into(),
                target: "cpu".into(),
            },
        );
        let env = BTreeMap::from([("K".to_string(), "V".to_string())]);
        let limits = Limits {
            memory_mb: Some(128),
            timeout_ms: None,
            concurrency: Some(4),
        };
        let form = format!(
            r#"{{"format":"nimbus.function.v1","wasm_sha256":"{wasm}","models":{{"net":{{"model":"resnet","version":"{}","sha256":"{}","engine":"onnxruntime","target":"cpu"}}}},"env":{{"K":"V"}},"limits":{{"memory_mb":128,"timeout_ms":null,"concurrency":4}},"public":true}}"#,
            "b".repeat(12),
            "b".repeat(64)
        );
        assert_eq!(
            function_digest(&wasm, &models, &env, &limits, true),
            hex::encode(Sha256::digest(form.as_bytes()))
        );
    }
}
