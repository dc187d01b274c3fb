//! The `nimbus` CLI as a user drives it: push a model, deploy a function, invoke it.

use std::process::Command;

use nimbus_tests::{Nimbusd, binary, efficientnet, guest_wasm, model_file, repo_root};
use serde_json::Value;

fn nimbus(nimbusd: &Nimbusd, args: &[&str]) -> (bool, Vec<u8>, String) {
    let output = Command::new(binary("nimbus"))
        .args(args)
        .env("NIMBUS_URL", &nimbusd.url)
        .env("NIMBUS_API_KEY", &nimbusd.admin_key)
        .current_dir(repo_root())
        .output()
        .expect("running nimbus");
    (
        output.status.success(),
        output.stdout,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn push_deploy_and_invoke_through_the_cli() {
    guest_wasm("functions", "classify-image");
    let nimbusd = Nimbusd::start();
    let model = efficientnet();
    let (ok, stdout, stderr) = nimbus(
        &nimbusd,
        &[
            "model",
            "push",
            "efficientnet",
            model.to_str().unwrap(),
            "--engine",
            "openvino",
        ],
    );
    assert!(ok, "model push: {stderr}");
    let pushed: Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(pushed["engine"], "openvino");
    assert_eq!(pushed["version"].as_str().unwrap().len(), 12);

    let (ok, stdout, stderr) = nimbus(
        &nimbusd,
        &["deploy", "functions/classify-image", "--no-build"],
    );
    assert!(ok, "deploy: {stderr}");
    let deployed: Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(
        deployed["models"]["image-classifier"]["model"],
        "efficientnet"
    );

    let image = model_file("testdata/camera.png");
    let data = format!("@{}", image.display());
    let (ok, stdout, stderr) = nimbus(&nimbusd, &["invoke", "classify-image", "--data", &data]);
    assert!(ok, "invoke: {stderr}");
    let answer: Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(answer["top5"][0]["label"], "tripod");

    let (ok, stdout, _) = nimbus(&nimbusd, &["fn", "list"]);
    assert!(ok);
    let listed: Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(listed["functions"][0]["name"], "classify-image");

    let (ok, _, stderr) = nimbus(&nimbusd, &["invoke", "no-such-function"]);
    assert!(!ok, "a 404 exits non-zero");
    assert!(stderr.contains("404"), "{stderr}");
}
