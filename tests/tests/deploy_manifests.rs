//! deploy/: the Kubernetes manifests parse, hold the kinds docs/deployment.md promises, wire their
//! parts together, and name only flags and variables the real nimbusd has; the Dockerfile builds
//! nimbusd and fetches the engines with scripts/fetch-engines.sh.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use nimbus_tests::{binary, repo_root};
use serde::Deserialize as _;
use serde_yaml::Value;

fn manifests_dir() -> PathBuf {
    repo_root().join("deploy/kubernetes")
}

/// Every YAML document under deploy/kubernetes, with the file it came from.
fn documents() -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir(manifests_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"));
            if !value.is_null() {
                out.push((name.clone(), value));
            }
        }
    }
    out
}

fn kind(value: &Value) -> &str {
    value["kind"].as_str().unwrap_or_default()
}

fn one<'a>(documents: &'a [(String, Value)], wanted: &str) -> &'a Value {
    let found: Vec<_> = documents
        .iter()
        .filter(|(_, v)| kind(v) == wanted)
        .collect();
    assert_eq!(found.len(), 1, "expected one {wanted}");
    &found[0].1
}

/// `nimbusd --help`: every flag and its NIMBUS_* variable.
fn nimbusd_help() -> String {
    let output = Command::new(binary("nimbusd"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn every_document_parses_and_has_the_promised_kinds() {
    let documents = documents();
    let kinds: BTreeSet<&str> = documents.iter().map(|(_, v)| kind(v)).collect();
    let expected: BTreeSet<&str> = [
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Kustomization",
    ]
    .into();
    assert_eq!(kinds, expected);
    for (file, value) in &documents {
        assert!(
            value["apiVersion"].as_str().is_some(),
            "{file}: no apiVersion"
        );
        if kind(value) != "Kustomization" {
            assert!(
                value["metadata"]["name"].as_str().is_some(),
                "{file}: no name"
            );
        }
    }
    // The kustomization lists every other file.
    let kustomization = one(&documents, "Kustomization");
    let listed: BTreeSet<&str> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let files: BTreeSet<&str> = documents
        .iter()
        .filter(|(_, v)| kind(v) != "Kustomization")
        .map(|(f, _)| f.as_str())
        .collect();
    assert_eq!(listed, files);
}

#[test]
fn the_container_uses_only_real_nimbusd_flags_and_variables() {
    let documents = documents();
    let help = nimbusd_help();
    let deployment = one(&documents, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    for arg in container["args"].as_sequence().unwrap() {
        let arg = arg.as_str().unwrap();
        let flag = arg.split('=').next().unwrap();
        assert!(flag.starts_with("--"), "{arg}");
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "nimbusd has no flag {flag}"
        );
    }
    for kind_name in ["ConfigMap", "Secret"] {
        let document = one(&documents, kind_name);
        let data = document["data"]
            .as_mapping()
            .or_else(|| document["stringData"].as_mapping())
            .unwrap();
        for key in data.keys() {
            let key = key.as_str().unwrap();
            if key.starts_with("AWS_") {
                continue; // read by the S3 SDK, not by a flag
            }
            if key == "NIMBUS_LOG" {
                // The log filter, read by main.rs rather than by a flag.
                let main =
                    std::fs::read_to_string(repo_root().join("runtime/src/main.rs")).unwrap();
                assert!(main.contains("\"NIMBUS_LOG\""));
                continue;
            }
            assert!(
                help.contains(&format!("env: {key}")),
                "{kind_name} sets {key}, which nimbusd does not read"
            );
        }
        // Both are what the container reads its environment from.
        let name = document["metadata"]["name"].as_str().unwrap();
        let referenced = container["envFrom"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|source| {
                source["configMapRef"]["name"].as_str() == Some(name)
                    || source["secretRef"]["name"].as_str() == Some(name)
            });
        assert!(referenced, "the container does not read {name}");
    }
    let secret = one(&documents, "Secret");
    assert!(
        secret["stringData"]["NIMBUS_DATABASE_URL"]
            .as_str()
            .unwrap()
            .starts_with("postgres://")
    );
    assert!(secret["stringData"]["NIMBUS_KEY_PEPPER"].is_string());
    // Probes hit the real endpoints on the container's port.
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    let port = container["ports"][0]["containerPort"].as_u64().unwrap();
    let listen = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix("--listen="))
        .unwrap();
    assert!(
        listen.ends_with(&format!(":{port}")),
        "{listen} vs port {port}"
    );
}

#[test]
fn the_service_hpa_and_budget_point_at_the_deployment() {
    let documents = documents();
    let deployment = one(&documents, "Deployment");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(deployment["spec"]["selector"]["matchLabels"], *labels);
    let service = one(&documents, "Service");
    assert_eq!(service["spec"]["selector"], *labels);
    let port_name =
        deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"].clone();
    assert_eq!(service["spec"]["ports"][0]["targetPort"], port_name);
    let hpa = one(&documents, "HorizontalPodAutoscaler");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    assert!(
        hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2,
        "more than one node"
    );
    let pdb = one(&documents, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], *labels);
}

#[test]
fn the_dockerfile_builds_nimbusd_and_fetches_the_engines() {
    let dockerfile = std::fs::read_to_string(repo_root().join("deploy/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("cargo build --release"),
        "builds nimbusd"
    );
    assert!(dockerfile.contains("--bin nimbusd"));
    assert!(
        dockerfile.contains("scripts/fetch-engines.sh"),
        "fetches the engines"
    );
    assert!(dockerfile.contains("NIMBUS_ENGINES_DIR="));
    assert!(dockerfile.contains("ENTRYPOINT [\"nimbusd\"]"));
    let deployment_text = std::fs::read_to_string(manifests_dir().join("deployment.yaml")).unwrap();
    let exposed: u64 = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(deployment_text.contains(&format!("containerPort: {exposed}")));
}
