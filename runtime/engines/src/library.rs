//! Finding and checking the native engine libraries.
//!
//! This module owns where the libraries come from (the engines folder laid out by
//! `scripts/fetch-engines.sh`, or explicit paths from [`EnginesConfig`]) and the checks done with
//! a plain `dlopen` *before* a binding crate is pointed at a library. The binding crates panic
//! (`ort` with `load-dynamic`) or call through missing symbols (`openvino-sys` with
//! `runtime-linking`) when handed a wrong file, so nothing is passed to them until we have seen
//! that the file loads, exports the entry points they use, and is a version they support.

use std::ffi::{CStr, c_char};
use std::path::{Path, PathBuf};

use crate::EnginesConfig;

/// How to fix a missing or broken engine library; appended to every "unavailable" reason.
pub(crate) const FIX_HINT: &str = "run scripts/fetch-engines.sh, or set NIMBUS_ENGINES_DIR \
     (or the engine's library path in the configuration)";

/// The default engines folder: `$NIMBUS_ENGINES_DIR`, else
/// `${XDG_CACHE_HOME:-$HOME/.cache}/nimbus/engines`. `None` when neither variable gives a path.
pub fn default_engines_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("NIMBUS_ENGINES_DIR") {
        return Some(PathBuf::from(dir));
    }
    let cache = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(cache.join("nimbus").join("engines"))
}

fn engines_dir(config: &EnginesConfig) -> Result<PathBuf, String> {
    config
        .dir
        .clone()
        .or_else(default_engines_dir)
        .ok_or_else(|| {
            format!("no engines folder: neither NIMBUS_ENGINES_DIR nor HOME is set; {FIX_HINT}")
        })
}

/// `lib<name>.so` on Linux (the platform's prefix and suffix elsewhere).
fn dll_name(name: &str) -> String {
    format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// Parses `1.31.1` (or `2026.4.1`) into its numeric components; `None` if any part is not a number.
fn parse_version(s: &str) -> Option<Vec<u64>> {
    let parts: Option<Vec<u64>> = s.split('.').map(|p| p.parse().ok()).collect();
    parts.filter(|p| !p.is_empty())
}

/// The newest `<prefix><version>/` folder in `dir` that contains `file`.
fn newest_versioned(dir: &Path, prefix: &str, file: &str) -> Result<PathBuf, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the engines folder `{}`: {e}", dir.display()))?;
    let mut best: Option<(Vec<u64>, PathBuf)> = None;
    let mut seen_without_file = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(version) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(parse_version)
        else {
            continue;
        };
        let path = entry.path();
        if !path.join(file).exists() {
            seen_without_file.push(path);
            continue;
        }
        if best.as_ref().is_none_or(|(v, _)| version > *v) {
            best = Some((version, path));
        }
    }
    match best {
        Some((_, path)) => Ok(path),
        None if !seen_without_file.is_empty() => Err(format!(
            "`{}` has no {file}",
            seen_without_file[0].display()
        )),
        None => Err(format!(
            "no {prefix}<version>/ folder in `{}`",
            dir.display()
        )),
    }
}

/// The ONNX Runtime library to load: the configured file, else the newest
/// `onnxruntime-<version>/libonnxruntime.so` in the engines folder.
pub(crate) fn onnxruntime_library_path(
    config: &EnginesConfig,
) -> Result<PathBuf, (Option<PathBuf>, String)> {
    if let Some(path) = &config.onnxruntime_library {
        return Ok(path.clone());
    }
    let dir = engines_dir(config).map_err(|reason| (None, reason))?;
    let file = dll_name("onnxruntime");
    newest_versioned(&dir, "onnxruntime-", &file)
        .map(|folder| folder.join(&file))
        .map_err(|why| {
            (
                None,
                format!("ONNX Runtime library not found: {why}; {FIX_HINT}"),
            )
        })
}

/// The OpenVINO folder to load from: the configured one, else the newest `openvino-<version>/`
/// in the engines folder.
pub(crate) fn openvino_dir(config: &EnginesConfig) -> Result<PathBuf, (Option<PathBuf>, String)> {
    if let Some(dir) = &config.openvino_dir {
        return Ok(dir.clone());
    }
    let dir = engines_dir(config).map_err(|reason| (None, reason))?;
    newest_versioned(&dir, "openvino-", &dll_name("openvino_c")).map_err(|why| {
        (
            None,
            format!("OpenVINO library not found: {why}; {FIX_HINT}"),
        )
    })
}

/// `libopenvino_c.so` inside an OpenVINO folder.
pub(crate) fn openvino_library_path(dir: &Path) -> PathBuf {
    dir.join(dll_name("openvino_c"))
}

/// Opens a shared library with a plain `dlopen`, with messages that name the path.
fn open(path: &Path, what: &str) -> Result<(PathBuf, libloading::Library), String> {
    if !path.exists() {
        return Err(format!(
            "{what} library `{}` does not exist; {FIX_HINT}",
            path.display()
        ));
    }
    if !path.is_file() {
        return Err(format!(
            "{what} library `{}` is not a file; {FIX_HINT}",
            path.display()
        ));
    }
    // An absolute path: `dlopen` must not search the system for a bare file name.
    let path = path.canonicalize().map_err(|e| {
        format!(
            "cannot resolve the {what} library path `{}`: {e}",
            path.display()
        )
    })?;
    // SAFETY: loading a shared library runs its initialisers. The path is operator configuration
    // (or the engines folder the operator filled), which is the trust boundary for native code.
    let library = unsafe { libloading::Library::new(&path) }.map_err(|e| {
        format!(
            "cannot load the {what} library `{}`: {e}; {FIX_HINT}",
            path.display()
        )
    })?;
    Ok((path, library))
}

fn c_str(ptr: *const c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-null, and both engines document these as NUL-terminated static strings.
    Some(
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// A library that passed the checks; holding it keeps the `dlopen` reference alive.
pub(crate) struct CheckedLibrary {
    pub path: PathBuf,
    pub version: String,
    _library: libloading::Library,
}

/// Checks that an ONNX Runtime version string (`1.31.1`) provides C API version `required_api`
/// (ONNX Runtime 1.N provides API versions up to N).
pub(crate) fn check_onnxruntime_version(version: &str, required_api: u32) -> Result<(), String> {
    let parts = parse_version(version.trim())
        .filter(|p| p.len() >= 2)
        .ok_or_else(|| format!("it reports a malformed version `{version}`"))?;
    if parts[0] != 1 || parts[1] < u64::from(required_api) {
        return Err(format!(
            "it is ONNX Runtime {version}, but the `ort` binding needs 1.{required_api} or newer"
        ));
    }
    Ok(())
}

/// Opens the ONNX Runtime library at `path`, checks it exports `OrtGetApiBase`, reads its version
/// through `OrtGetApiBase()->GetVersionString()` and checks that it provides `required_api`.
pub(crate) fn check_onnxruntime(path: &Path, required_api: u32) -> Result<CheckedLibrary, String> {
    let (path, library) = open(path, "ONNX Runtime")?;
    type GetApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;
    // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime release.
    let get_api_base = unsafe { library.get::<GetApiBase>(b"OrtGetApiBase\0") }.map_err(|e| {
        format!(
            "`{}` is not an ONNX Runtime library: it does not export `OrtGetApiBase` ({e}); {FIX_HINT}",
            path.display()
        )
    })?;
    // SAFETY: the entry point takes no arguments and returns a pointer to a static table.
    let base = unsafe { get_api_base() };
    if base.is_null() {
        return Err(format!(
            "`{}`: OrtGetApiBase() returned null",
            path.display()
        ));
    }
    // SAFETY: `base` is non-null and points to the library's static `OrtApiBase`.
    let version = c_str(unsafe { ((*base).GetVersionString)() })
        .ok_or_else(|| format!("`{}`: GetVersionString() returned null", path.display()))?;
    check_onnxruntime_version(&version, required_api)
        .map_err(|why| format!("`{}` cannot be used: {why}; {FIX_HINT}", path.display()))?;
    // SAFETY: as above; `GetApi` returns null for an API version the library does not provide.
    let api = unsafe { ((*base).GetApi)(required_api) };
    if api.is_null() {
        return Err(format!(
            "`{}` (ONNX Runtime {version}) does not provide C API version {required_api}; {FIX_HINT}",
            path.display()
        ));
    }
    Ok(CheckedLibrary {
        path,
        version,
        _library: library,
    })
}

/// Every `openvino_c` function the `openvino` crate calls on our behalf. `openvino-sys` resolves
/// symbols lazily and panics on a missing one, so all must be present before we hand it the path.
const OPENVINO_SYMBOLS: &[&str] = &[
    "ov_get_openvino_version",
    "ov_version_free",
    "ov_get_last_err_msg",
    "ov_core_create",
    "ov_core_free",
    "ov_core_set_property",
    "ov_core_get_available_devices",
    "ov_available_devices_free",
    "ov_core_read_model_from_memory_buffer",
    "ov_core_compile_model",
    "ov_model_free",
    "ov_model_inputs_size",
    "ov_model_outputs_size",
    "ov_model_const_input_by_index",
    "ov_model_const_output_by_index",
    "ov_port_get_any_name",
    "ov_port_get_element_type",
    "ov_port_get_partial_shape",
    "ov_partial_shape_free",
    "ov_compiled_model_create_infer_request",
    "ov_compiled_model_inputs_size",
    "ov_compiled_model_outputs_size",
    "ov_compiled_model_free",
    "ov_compiled_model_input_by_index",
    "ov_compiled_model_output_by_index",
    "ov_infer_request_get_input_tensor_by_index",
    "ov_infer_request_get_output_tensor_by_index",
    "ov_infer_request_set_input_tensor_by_index",
    "ov_infer_request_infer",
    "ov_infer_request_free",
    "ov_tensor_create",
    "ov_tensor_data",
    "ov_tensor_free",
    "ov_tensor_get_byte_size",
    "ov_tensor_get_element_type",
    "ov_tensor_get_shape",
    "ov_shape_create",
    "ov_shape_free",
];

/// The oldest OpenVINO `openvino-sys` 0.11 accepts (its own check panics on odd version strings).
const OPENVINO_MIN: (u64, u64) = (2025, 1);

/// Checks an OpenVINO build number (`2026.4.1-20417-...`) against [`OPENVINO_MIN`].
pub(crate) fn check_openvino_version(version: &str) -> Result<(), String> {
    let mut parts = version.trim().split(['.', '-']);
    let year = parts.next().and_then(|p| p.parse::<u64>().ok());
    let minor = parts.next().and_then(|p| p.parse::<u64>().ok());
    match (year, minor) {
        (Some(year), Some(minor)) if (year, minor) >= OPENVINO_MIN => Ok(()),
        (Some(_), Some(_)) => Err(format!(
            "it is OpenVINO {version}, but the `openvino` binding needs {}.{} or newer",
            OPENVINO_MIN.0, OPENVINO_MIN.1
        )),
        _ => Err(format!("it reports a malformed version `{version}`")),
    }
}

/// Opens `libopenvino_c.so` at `path`, checks it exports every function the binding uses, and
/// reads and checks its version through `ov_get_openvino_version`.
pub(crate) fn check_openvino(path: &Path) -> Result<CheckedLibrary, String> {
    let (path, library) = open(path, "OpenVINO")?;
    let missing: Vec<&str> = OPENVINO_SYMBOLS
        .iter()
        .copied()
        .filter(|name| {
            let symbol = format!("{name}\0");
            // SAFETY: only looked up, never called through this type.
            unsafe { library.get::<unsafe extern "C" fn()>(symbol.as_bytes()) }.is_err()
        })
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "`{}` is not a usable OpenVINO C library: it lacks {}; {FIX_HINT}",
            path.display(),
            missing.join(", ")
        ));
    }

    #[repr(C)]
    struct Version {
        build_number: *const c_char,
        description: *const c_char,
    }
    // The status is read as a plain integer: an enum from foreign code could hold any value.
    type GetVersion = unsafe extern "C" fn(*mut Version) -> i32;
    type FreeVersion = unsafe extern "C" fn(*mut Version);
    // SAFETY: both are present (checked above) and have these signatures in the OpenVINO 2.0 C API.
    let (get_version, free_version) = unsafe {
        (
            library
                .get::<GetVersion>(b"ov_get_openvino_version\0")
                .map_err(|e| e.to_string())?,
            library
                .get::<FreeVersion>(b"ov_version_free\0")
                .map_err(|e| e.to_string())?,
        )
    };
    let mut raw = Version {
        build_number: std::ptr::null(),
        description: std::ptr::null(),
    };
    // SAFETY: `raw` is a valid out-parameter; it is freed with the library's own function.
    let status = unsafe { get_version(&mut raw) };
    if status != 0 {
        return Err(format!(
            "`{}`: ov_get_openvino_version failed with status {status}",
            path.display()
        ));
    }
    let version = c_str(raw.build_number);
    // SAFETY: `raw` was filled by `ov_get_openvino_version` above.
    unsafe { free_version(&mut raw) };
    let version = version.ok_or_else(|| {
        format!(
            "`{}`: ov_get_openvino_version returned no build number",
            path.display()
        )
    })?;
    check_openvino_version(&version)
        .map_err(|why| format!("`{}` cannot be used: {why}; {FIX_HINT}", path.display()))?;
    Ok(CheckedLibrary {
        path,
        version,
        _library: library,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onnxruntime_versions() {
        assert!(check_onnxruntime_version("1.31.1", 17).is_ok());
        assert!(check_onnxruntime_version("1.17.0", 17).is_ok());
        let old = check_onnxruntime_version("1.16.3", 17).unwrap_err();
        assert!(old.contains("1.16.3") && old.contains("1.17"), "{old}");
        assert!(check_onnxruntime_version("2.0.0", 17).is_err());
        assert!(check_onnxruntime_version("garbage", 17).is_err());
        assert!(check_onnxruntime_version("", 17).is_err());
        assert!(check_onnxruntime_version("1", 17).is_err());
    }

    #[test]
    fn openvino_versions() {
        assert!(check_openvino_version("2026.4.1-20417-7e2a7b8f").is_ok());
        assert!(check_openvino_version("2025.1.0").is_ok());
        assert!(check_openvino_version("2024.6.0-17404").is_err());
        assert!(check_openvino_version("custom_build").is_err());
        assert!(check_openvino_version("").is_err());
    }

    #[test]
    fn newest_folder_wins_and_partial_folders_are_ignored() {
        let dir = std::env::temp_dir().join(format!("nimbus-engines-lib-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for name in [
            "onnxruntime-1.9.0",
            "onnxruntime-1.31.1",
            "onnxruntime-1.30.0",
            "onnxruntime-1.40.0.partial",
        ] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            std::fs::write(dir.join(name).join(dll_name("onnxruntime")), b"").unwrap();
        }
        std::fs::create_dir_all(dir.join("onnxruntime-1.50.0")).unwrap(); // no library inside
        let found = newest_versioned(&dir, "onnxruntime-", &dll_name("onnxruntime")).unwrap();
        assert_eq!(found, dir.join("onnxruntime-1.31.1"));
        let none = newest_versioned(&dir, "openvino-", "libopenvino_c.so").unwrap_err();
        assert!(none.contains("openvino-"), "{none}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_and_non_library_files_are_reported_with_their_path() {
        let missing = check_onnxruntime(Path::new("/nonexistent/libonnxruntime.so"), 17)
            .err()
            .unwrap();
        assert!(
            missing.contains("/nonexistent/libonnxruntime.so"),
            "{missing}"
        );
        assert!(missing.contains("fetch-engines.sh"), "{missing}");
        let text = std::env::temp_dir().join(format!("nimbus-not-a-lib-{}.so", std::process::id()));
        std::fs::write(&text, "just text\n").unwrap();
        let err = check_openvino(&text).err().unwrap();
        assert!(err.contains("nimbus-not-a-lib"), "{err}");
        std::fs::remove_file(&text).unwrap();
    }
}
