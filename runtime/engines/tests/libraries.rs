//! Missing, broken and foreign native libraries: the engine is unavailable with a reason that
//! names the path and says how to fix it, and nothing panics. The real libraries report their
//! versions.

mod common;

use std::path::PathBuf;

use nimbus_engines::{EngineError, EngineKind, Engines, EnginesConfig, Target};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nimbus-engines-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn unavailable(engines: &Engines, kind: EngineKind) -> String {
    let status = engines.engine_status(kind).clone();
    assert!(!status.available, "{kind} should be unavailable");
    assert!(status.version.is_none());
    let reason = status.reason.expect("a reason");
    match engines.load_model(kind, b"model", Target::Cpu, 1) {
        Err(EngineError::Unavailable(m)) => assert!(m.contains(&reason), "{m}"),
        other => panic!("{kind}: expected Unavailable, got {:?}", other.err()),
    }
    reason
}

#[test]
fn a_text_file_or_a_missing_path_is_unavailable_not_a_panic() {
    let dir = scratch("broken");
    let text = dir.join("libonnxruntime.so");
    std::fs::write(&text, "this is a text file, not a shared library\n").unwrap();
    std::fs::write(dir.join("libopenvino_c.so"), "not a library either\n").unwrap();

    let engines = Engines::load(&EnginesConfig {
        onnxruntime_library: Some(text.clone()),
        openvino_dir: Some(dir.clone()),
        ..EnginesConfig::default()
    });
    let reason = unavailable(&engines, EngineKind::OnnxRuntime);
    assert!(reason.contains(text.to_str().unwrap()), "{reason}");
    assert!(reason.contains("fetch-engines.sh"), "{reason}");
    let reason = unavailable(&engines, EngineKind::OpenVino);
    assert!(reason.contains(dir.to_str().unwrap()), "{reason}");

    let missing = dir.join("nowhere").join("libonnxruntime.so");
    let engines = Engines::load(&EnginesConfig {
        onnxruntime_library: Some(missing.clone()),
        openvino_dir: Some(dir.join("nowhere")),
        ..EnginesConfig::default()
    });
    let reason = unavailable(&engines, EngineKind::OnnxRuntime);
    assert!(
        reason.contains(missing.to_str().unwrap()) && reason.contains("does not exist"),
        "{reason}"
    );
    assert!(reason.contains("NIMBUS_ENGINES_DIR"), "{reason}");
    let reason = unavailable(&engines, EngineKind::OpenVino);
    assert!(reason.contains("nowhere"), "{reason}");

    // Status serialises for the API.
    let json = serde_json::to_value(engines.status()).unwrap();
    assert_eq!(json[0]["kind"], "onnxruntime");
    assert_eq!(json[0]["available"], false);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_real_library_of_the_wrong_engine_is_unavailable() {
    // libopenvino_c.so is a fine shared library, but not ONNX Runtime: no OrtGetApiBase.
    let real = common::engines();
    let ov_lib = real
        .engine_status(EngineKind::OpenVino)
        .library
        .clone()
        .unwrap();
    let ov_dir = ov_lib.parent().unwrap().to_path_buf();
    let engines = Engines::load(&EnginesConfig {
        onnxruntime_library: Some(ov_lib.clone()),
        openvino_dir: Some(ov_dir),
        ..EnginesConfig::default()
    });
    let reason = unavailable(&engines, EngineKind::OnnxRuntime);
    assert!(reason.contains("OrtGetApiBase"), "{reason}");
    // The other engine is unaffected.
    assert!(engines.is_available(EngineKind::OpenVino));
}

/// Builds a stand-in `libonnxruntime.so` that exports `OrtGetApiBase` with the given version
/// string, and whose `GetApi` provides no API version at all (as a too-old library would).
fn fake_onnxruntime(dir: &std::path::Path, version: &str) -> PathBuf {
    let source = dir.join(format!("fake-{version}.c"));
    let library = dir
        .join(format!("fake-{version}"))
        .join("libonnxruntime.so");
    std::fs::create_dir_all(library.parent().unwrap()).unwrap();
    std::fs::write(
        &source,
        format!(
            "#include <stddef.h>\n\
             typedef struct {{ const void *(*GetApi)(unsigned); const char *(*GetVersionString)(void); }} Base;\n\
             static const void *get_api(unsigned v) {{ (void)v; return NULL; }}\n\
             static const char *get_version(void) {{ return \"{version}\"; }}\n\
             static const Base base = {{ get_api, get_version }};\n\
             const Base *OrtGetApiBase(void) {{ return &base; }}\n"
        ),
    )
    .unwrap();
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .status()
        .expect("a C compiler (`cc`, which Rust links with) to build a stand-in library");
    assert!(status.success());
    library
}

#[test]
fn a_too_old_or_incomplete_onnxruntime_is_unavailable_not_a_panic() {
    let dir = scratch("old");
    let old = fake_onnxruntime(&dir, "1.16.3");
    let engines = Engines::load(&EnginesConfig {
        onnxruntime_library: Some(old.clone()),
        openvino_dir: Some(dir.clone()),
        ..EnginesConfig::default()
    });
    let reason = unavailable(&engines, EngineKind::OnnxRuntime);
    assert!(reason.contains("it is ONNX Runtime 1.16.3"), "{reason}");
    assert!(
        reason.contains("needs 1.") && reason.contains("or newer"),
        "{reason}"
    );
    assert!(
        reason.contains(old.parent().unwrap().to_str().unwrap()),
        "{reason}"
    );

    // New enough by its version string, but it provides no API table: refused too.
    let liar = fake_onnxruntime(&dir, "1.99.0");
    let engines = Engines::load(&EnginesConfig {
        onnxruntime_library: Some(liar),
        openvino_dir: Some(dir.clone()),
        ..EnginesConfig::default()
    });
    let reason = unavailable(&engines, EngineKind::OnnxRuntime);
    assert!(
        reason.contains("does not provide C API version"),
        "{reason}"
    );

    let garbage = fake_onnxruntime(&dir, "banana");
    let engines = Engines::load(&EnginesConfig {
        onnxruntime_library: Some(garbage),
        openvino_dir: Some(dir.clone()),
        ..EnginesConfig::default()
    });
    let reason = unavailable(&engines, EngineKind::OnnxRuntime);
    assert!(reason.contains("malformed version `banana`"), "{reason}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_empty_engines_folder_says_to_fetch_the_engines() {
    let dir = scratch("empty");
    let engines = Engines::load(&EnginesConfig {
        dir: Some(dir.clone()),
        ..EnginesConfig::default()
    });
    for kind in EngineKind::ALL {
        let reason = unavailable(&engines, kind);
        assert!(reason.contains("scripts/fetch-engines.sh"), "{reason}");
        assert!(reason.contains(dir.to_str().unwrap()), "{reason}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_real_libraries_report_their_versions() {
    let engines = common::engines();
    for status in engines.status() {
        assert!(status.available);
        let version = status.version.as_deref().unwrap();
        let library = status.library.as_ref().unwrap();
        assert!(library.exists());
        eprintln!("{}: {version} from {}", status.kind, library.display());
        match status.kind {
            EngineKind::OnnxRuntime => assert!(version.starts_with("1."), "{version}"),
            EngineKind::OpenVino => assert!(version.starts_with("20"), "{version}"),
        }
    }
    // Loading again in the same process shares the loaded libraries.
    let again = Engines::load(&EnginesConfig::default());
    assert!(again.status().iter().all(|s| s.available));
}
