//! Inference engines behind one trait.
//!
//! This crate owns the engine layer of Nimbus: it loads the native ONNX Runtime and OpenVINO
//! libraries at run time ([`Engines::load`]), turns model bytes into a [`Model`] once
//! ([`Engines::load_model`]), and runs tensors through it from many threads at once
//! ([`Model::run`]). This module holds the public types and the [`Model`] trait; the engines live in
//! `onnxruntime` and `openvino`, the native-library discovery and checks in `library`, the pool of
//! sessions / infer requests in `pool`, the input checks in `validate`, and the byte conversions
//! in `tensor`.
//!
//! The rules every engine keeps:
//! - no panic on any input: a broken or missing library makes that engine unavailable with a
//!   reason, bad tensors are [`EngineError::InvalidArgument`], and the native calls run under a
//!   panic guard so a panic inside a binding crate becomes [`EngineError::Runtime`];
//! - every [`ElementType`] in and out, checked against the model before native code sees it;
//! - dynamic dimensions are `None`, output names are the model's own, in the model's order;
//! - a [`Target::Gpu`] request never silently runs on the CPU.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod guard;
mod library;
mod onnx;
mod onnxruntime;
mod openvino;
mod pool;
mod tensor;
mod validate;

pub use library::default_engines_dir;
pub use tensor::Element;
pub use validate::{byte_len, validate_inputs};

/// An inference engine Nimbus can run models on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EngineKind {
    /// ONNX Runtime, through the `ort` crate.
    #[serde(rename = "onnxruntime")]
    OnnxRuntime,
    /// OpenVINO, through the `openvino` crate.
    #[serde(rename = "openvino")]
    OpenVino,
}

impl EngineKind {
    /// Every engine, in a stable order.
    pub const ALL: [EngineKind; 2] = [EngineKind::OnnxRuntime, EngineKind::OpenVino];

    /// The name used in configuration, the API and `Display`.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::OnnxRuntime => "onnxruntime",
            EngineKind::OpenVino => "openvino",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EngineKind {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "onnxruntime" | "onnx" | "ort" => Ok(EngineKind::OnnxRuntime),
            "openvino" | "ov" => Ok(EngineKind::OpenVino),
            _ => Err(EngineError::InvalidArgument(format!(
                "unknown engine `{s}`; expected `onnxruntime` or `openvino`"
            ))),
        }
    }
}

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The CPU.
    Cpu,
    /// A GPU; loading fails with [`EngineError::Unsupported`] when none can be used.
    Gpu,
    /// A GPU when one can be used, else the CPU; [`Model::target`] says which was chosen.
    Auto,
}

impl Target {
    /// The name used in configuration, the API and `Display`.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Cpu => "cpu",
            Target::Gpu => "gpu",
            Target::Auto => "auto",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Target {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Target::Cpu),
            "gpu" => Ok(Target::Gpu),
            "auto" => Ok(Target::Auto),
            _ => Err(EngineError::InvalidArgument(format!(
                "unknown target `{s}`; expected `cpu`, `gpu` or `auto`"
            ))),
        }
    }
}

/// The element types a [`Tensor`] can carry: exactly the tensor types of wasi-nn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ElementType {
    /// IEEE 754 half precision.
    #[serde(rename = "fp16")]
    F16,
    /// IEEE 754 single precision.
    #[serde(rename = "fp32")]
    F32,
    /// IEEE 754 double precision.
    #[serde(rename = "fp64")]
    F64,
    /// bfloat16 (the upper half of an f32).
    #[serde(rename = "bf16")]
    Bf16,
    /// Unsigned 8-bit integer.
    #[serde(rename = "u8")]
    U8,
    /// Signed 32-bit integer.
    #[serde(rename = "i32")]
    I32,
    /// Signed 64-bit integer.
    #[serde(rename = "i64")]
    I64,
}

impl ElementType {
    /// Every element type.
    pub const ALL: [ElementType; 7] = [
        ElementType::F16,
        ElementType::F32,
        ElementType::F64,
        ElementType::Bf16,
        ElementType::U8,
        ElementType::I32,
        ElementType::I64,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            ElementType::U8 => 1,
            ElementType::F16 | ElementType::Bf16 => 2,
            ElementType::F32 | ElementType::I32 => 4,
            ElementType::F64 | ElementType::I64 => 8,
        }
    }

    /// The name used in messages, the API and `Display` (wasi-nn's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            ElementType::F16 => "fp16",
            ElementType::F32 => "fp32",
            ElementType::F64 => "fp64",
            ElementType::Bf16 => "bf16",
            ElementType::U8 => "u8",
            ElementType::I32 => "i32",
            ElementType::I64 => "i64",
        }
    }
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ElementType {
    type Err = EngineError;

    /// Accepts the `Display` names and the common aliases (`f32`, `float32`, `float16`, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fp16" | "f16" | "float16" => Ok(ElementType::F16),
            "fp32" | "f32" | "float32" | "float" => Ok(ElementType::F32),
            "fp64" | "f64" | "float64" | "double" => Ok(ElementType::F64),
            "bf16" | "bfloat16" => Ok(ElementType::Bf16),
            "u8" | "uint8" => Ok(ElementType::U8),
            "i32" | "int32" => Ok(ElementType::I32),
            "i64" | "int64" => Ok(ElementType::I64),
            _ => Err(EngineError::InvalidArgument(format!(
                "unknown tensor type `{s}`; expected one of fp16, fp32, fp64, bf16, u8, i32, i64"
            ))),
        }
    }
}

/// A dense tensor: row-major, little-endian element bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    /// The shape.
    pub dims: Vec<u32>,
    /// The element type.
    pub ty: ElementType,
    /// `product(dims) * ty.size()` bytes, row-major, little-endian.
    pub data: Vec<u8>,
}

/// What a model declares for one of its inputs or outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorInfo {
    /// The name in the model.
    pub name: String,
    /// The element type; `None` when the model uses a type [`ElementType`] does not have.
    pub ty: Option<ElementType>,
    /// The shape; `None` for a dynamic dimension.
    pub dims: Vec<Option<u64>>,
}

/// Everything that can go wrong in the engine layer. Every variant carries a message for people.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// Bad caller input: wrong byte length, wrong type, unknown or missing input, wrong shape.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Model bytes the engine cannot parse.
    #[error("invalid model encoding: {0}")]
    InvalidEncoding(String),
    /// Something this engine or machine cannot do (a GPU target without a GPU, a tensor type).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The engine's native library is not loaded; the message says why and how to fix it.
    #[error("engine unavailable: {0}")]
    Unavailable(String),
    /// The engine failed while running.
    #[error("engine runtime error: {0}")]
    Runtime(String),
}

/// Where to find the native engine libraries, and how to run them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnginesConfig {
    /// The engines folder; default [`default_engines_dir`]: `$NIMBUS_ENGINES_DIR`, else
    /// `${XDG_CACHE_HOME:-$HOME/.cache}/nimbus/engines`. The newest `onnxruntime-<version>/` and
    /// `openvino-<version>/` folders in it are used.
    pub dir: Option<PathBuf>,
    /// The ONNX Runtime library file itself (overrides `dir`).
    pub onnxruntime_library: Option<PathBuf>,
    /// The folder holding `libopenvino_c.so` and its plugins (overrides `dir`).
    pub openvino_dir: Option<PathBuf>,
    /// Threads one inference may use inside an operator; default: the engine's choice (about one
    /// per core). ONNX Runtime: the size of the process-wide intra-op pool shared by all sessions,
    /// fixed by the first `Engines::load` that loads the library. OpenVINO: per compiled model.
    pub intra_op_threads: Option<usize>,
}

/// What [`Engines::status`] reports for one engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineStatus {
    /// Which engine.
    pub kind: EngineKind,
    /// Whether models can be loaded on it.
    pub available: bool,
    /// The native library's version, when it could be read.
    pub version: Option<String>,
    /// The native library file used (or looked for).
    pub library: Option<PathBuf>,
    /// Why it is not available.
    pub reason: Option<String>,
}

/// A loaded model. Cheap to share (`Arc`); `run` may be called from many threads at once and the
/// calls run in parallel, up to the number of sessions the model was loaded with.
pub trait Model: Send + Sync {
    /// The engine running this model.
    fn engine(&self) -> EngineKind;
    /// The target actually used ([`Target::Auto`] resolved to [`Target::Cpu`] or [`Target::Gpu`]).
    fn target(&self) -> Target;
    /// The model's inputs, in the model's order.
    fn inputs(&self) -> &[TensorInfo];
    /// The model's outputs, in the model's order.
    fn outputs(&self) -> &[TensorInfo];
    /// How many `run` calls can execute at the same time (the session / infer-request pool size).
    fn sessions(&self) -> usize;
    /// Runs one inference. Blocking. Inputs are matched by name, in any order; every model input
    /// must be given exactly once. Returns every output, named as in the model, in the model's order.
    fn run(&self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, EngineError>;
}

/// The most sessions one model may have: each holds its own engine state (memory).
pub const MAX_SESSIONS: usize = 256;

struct EngineSlot<E> {
    status: EngineStatus,
    engine: Option<E>,
}

/// The engines of this process: created once with [`Engines::load`], shared by every model load.
pub struct Engines {
    onnxruntime: EngineSlot<onnxruntime::OrtEngine>,
    openvino: EngineSlot<openvino::OvEngine>,
}

impl fmt::Debug for Engines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engines")
            .field("status", &self.status())
            .finish()
    }
}

impl Engines {
    /// Loads both engines' native libraries. Never panics: an engine whose library is missing,
    /// broken or too old is reported unavailable, with the reason, by [`Engines::status`].
    ///
    /// Meant to be called once per process. Each native library can be loaded only once per
    /// process: a later `load` naming the same library shares it (and ONNX Runtime's thread pool
    /// settings from the first load), one naming a different library reports that engine
    /// unavailable.
    pub fn load(config: &EnginesConfig) -> Engines {
        let onnxruntime = load_slot(EngineKind::OnnxRuntime, || {
            let path = library::onnxruntime_library_path(config)?;
            match onnxruntime::OrtEngine::init(&path, config.intra_op_threads) {
                Ok(engine) => Ok((Some(engine.version().to_string()), path, engine)),
                Err(reason) => Err((Some(path), reason)),
            }
        });
        let openvino = load_slot(EngineKind::OpenVino, || {
            let dir = library::openvino_dir(config)?;
            let path = library::openvino_library_path(&dir);
            match openvino::OvEngine::init(&dir, config.intra_op_threads) {
                Ok(engine) => Ok((Some(engine.version().to_string()), path, engine)),
                Err(reason) => Err((Some(path), reason)),
            }
        });
        Engines {
            onnxruntime,
            openvino,
        }
    }

    /// Each engine's availability, version, library and, when unavailable, the reason.
    pub fn status(&self) -> Vec<EngineStatus> {
        vec![
            self.onnxruntime.status.clone(),
            self.openvino.status.clone(),
        ]
    }

    /// One engine's status.
    pub fn engine_status(&self, kind: EngineKind) -> &EngineStatus {
        match kind {
            EngineKind::OnnxRuntime => &self.onnxruntime.status,
            EngineKind::OpenVino => &self.openvino.status,
        }
    }

    /// Whether models can be loaded on `kind`.
    pub fn is_available(&self, kind: EngineKind) -> bool {
        self.engine_status(kind).available
    }

    /// Parses and compiles `model` (ONNX bytes) once on `kind` for `target`, with a pool of
    /// `sessions` sessions (ONNX Runtime) or infer requests (OpenVINO) so that up to `sessions`
    /// [`Model::run`] calls execute in parallel. Blocking: call it off async workers.
    pub fn load_model(
        &self,
        kind: EngineKind,
        model: &[u8],
        target: Target,
        sessions: usize,
    ) -> Result<Arc<dyn Model>, EngineError> {
        if sessions == 0 || sessions > MAX_SESSIONS {
            return Err(EngineError::InvalidArgument(format!(
                "sessions must be between 1 and {MAX_SESSIONS}, got {sessions}"
            )));
        }
        if model.is_empty() {
            return Err(EngineError::InvalidEncoding(
                "the model is empty (0 bytes)".into(),
            ));
        }
        let unavailable = |status: &EngineStatus| {
            EngineError::Unavailable(format!(
                "{}: {}",
                status.kind,
                status.reason.as_deref().unwrap_or("not loaded")
            ))
        };
        let loaded: Arc<dyn Model> = match kind {
            EngineKind::OnnxRuntime => match &self.onnxruntime.engine {
                Some(engine) => Arc::new(engine.load_model(model, target, sessions)?),
                None => return Err(unavailable(&self.onnxruntime.status)),
            },
            EngineKind::OpenVino => match &self.openvino.engine {
                Some(engine) => Arc::new(engine.load_model(model, target, sessions)?),
                None => return Err(unavailable(&self.openvino.status)),
            },
        };
        tracing::debug!(
            engine = %kind,
            target = %loaded.target(),
            sessions,
            bytes = model.len(),
            inputs = loaded.inputs().len(),
            outputs = loaded.outputs().len(),
            "model loaded"
        );
        Ok(loaded)
    }
}

type SlotResult<E> = Result<(Option<String>, PathBuf, E), (Option<PathBuf>, String)>;

fn load_slot<E>(kind: EngineKind, load: impl FnOnce() -> SlotResult<E>) -> EngineSlot<E> {
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(load)).unwrap_or_else(|panic| {
            Err((
                None,
                format!(
                    "loading the library panicked: {}",
                    guard::panic_message(&panic)
                ),
            ))
        });
    match outcome {
        Ok((version, library, engine)) => {
            tracing::info!(engine = %kind, version = ?version, library = %library.display(), "engine loaded");
            EngineSlot {
                status: EngineStatus {
                    kind,
                    available: true,
                    version,
                    library: Some(library),
                    reason: None,
                },
                engine: Some(engine),
            }
        }
        Err((library, reason)) => {
            tracing::warn!(engine = %kind, %reason, "engine unavailable");
            EngineSlot {
                status: EngineStatus {
                    kind,
                    available: false,
                    version: None,
                    library,
                    reason: Some(reason),
                },
                engine: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_and_models_can_be_shared_across_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Engines>();
        shared::<Arc<dyn Model>>();
        shared::<onnxruntime::OrtModel>();
        shared::<openvino::OvModel>();
    }

    #[test]
    fn names_parse_and_print_the_same() {
        for kind in EngineKind::ALL {
            assert_eq!(kind.to_string().parse::<EngineKind>().unwrap(), kind);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
        }
        for target in [Target::Cpu, Target::Gpu, Target::Auto] {
            assert_eq!(target.to_string().parse::<Target>().unwrap(), target);
            assert_eq!(
                serde_json::to_string(&target).unwrap(),
                format!("\"{target}\"")
            );
        }
        for ty in ElementType::ALL {
            assert_eq!(ty.to_string().parse::<ElementType>().unwrap(), ty);
            assert_eq!(serde_json::to_string(&ty).unwrap(), format!("\"{ty}\""));
        }
        assert_eq!(ElementType::F32.to_string(), "fp32");
        assert_eq!(ElementType::Bf16.size(), 2);
        assert!(matches!(
            "tpu".parse::<Target>(),
            Err(EngineError::InvalidArgument(_))
        ));
        assert!(matches!(
            "tensorflow".parse::<EngineKind>(),
            Err(EngineError::InvalidArgument(_))
        ));
    }
}
