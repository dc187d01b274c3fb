//! ONNX Runtime, through the `ort` crate (`load-dynamic`).
//!
//! This module owns the process-wide ONNX Runtime state (the library `ort` loaded and its one
//! `Environment`) and [`OrtModel`]. `ort` allows one library and one environment per process, so
//! the first successful [`OrtEngine::init`] fixes them; a later `init` with the same library shares
//! them, one with a different library is refused with a reason.
//!
//! `ort::Session::run` takes `&mut self` (ONNX Runtime's `Run` is not safe to call concurrently
//! on one session for every execution provider), so a model holds a pool of `sessions` sessions
//! built from the same bytes; they share pre-packed weights and the environment's global intra-op
//! thread pool, so N sessions cost neither N copies of packed weights nor N thread pools.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Mutex;

use half::{bf16, f16};
use ort::environment::{Environment, GlobalThreadPoolOptions};
use ort::ep::ExecutionProvider;
use ort::session::builder::{PrepackedWeights, SessionBuilder};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorElementType, ValueType};

use crate::guard::native;
use crate::library::{CheckedLibrary, FIX_HINT};
use crate::pool::Pool;
use crate::tensor::{Element, decode, encode};
use crate::validate::validate_inputs;
use crate::{ElementType, EngineError, EngineKind, Model, Target, Tensor, TensorInfo};

struct OrtGlobal {
    library: CheckedLibrary,
    env: Environment,
}

/// The one ONNX Runtime library and environment of this process.
static ORT: Mutex<Option<OrtGlobal>> = Mutex::new(None);

/// A loaded ONNX Runtime.
pub(crate) struct OrtEngine {
    env: Environment,
    version: String,
}

fn ort_error<R>(e: &ort::Error<R>) -> String {
    format!("{} ({:?})", e.message(), e.code())
}

impl OrtEngine {
    /// Checks and loads the library at `library` (see `library::check_onnxruntime`), then creates
    /// the environment with a global intra-op pool of `intra_op_threads` threads (0: one per core).
    pub(crate) fn init(
        library: &Path,
        intra_op_threads: Option<usize>,
    ) -> Result<OrtEngine, String> {
        let checked = crate::library::check_onnxruntime(library, ort::MINOR_VERSION)?;
        let mut global = ORT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = global.as_ref() {
            if existing.library.path == checked.path {
                return Ok(OrtEngine {
                    env: existing.env.clone(),
                    version: existing.library.version.clone(),
                });
            }
            return Err(format!(
                "ONNX Runtime is already loaded in this process from `{}`; cannot also load `{}`",
                existing.library.path.display(),
                checked.path.display()
            ));
        }
        let env = native("initialising ONNX Runtime", || {
            let builder = ort::init_from(&checked.path).map_err(|e| {
                EngineError::Unavailable(format!("`{}`: {e}; {FIX_HINT}", checked.path.display()))
            })?;
            let pool = GlobalThreadPoolOptions::default()
                .with_intra_threads(intra_op_threads.unwrap_or(0))
                .and_then(|p| p.with_inter_threads(1))
                // Idle pool threads sleep instead of spinning: a serverless node is mostly idle,
                // and spinning threads would steal cores from concurrent runs on other models.
                .and_then(|p| p.with_spin_control(false))
                .map_err(|e| EngineError::Unavailable(ort_error(&e)))?;
            builder
                .with_name("nimbus")
                .with_telemetry(false)
                .with_global_thread_pool(pool)
                .build()
                .map_err(|e| {
                    EngineError::Unavailable(format!(
                        "creating the ONNX Runtime environment failed: {}",
                        ort_error(&e)
                    ))
                })
        })
        .map_err(|e| match e {
            EngineError::Unavailable(m) | EngineError::Runtime(m) => m,
            other => other.to_string(),
        })?;
        let version = checked.version.clone();
        *global = Some(OrtGlobal {
            library: checked,
            env: env.clone(),
        });
        Ok(OrtEngine { env, version })
    }

    pub(crate) fn version(&self) -> &str {
        &self.version
    }

    pub(crate) fn load_model(
        &self,
        bytes: &[u8],
        target: Target,
        sessions: usize,
    ) -> Result<OrtModel, EngineError> {
        native("loading a model on ONNX Runtime", || {
            let prepacked = PrepackedWeights::new();
            let (first, target) = match target {
                Target::Cpu => (self.commit(bytes, &prepacked, Target::Cpu)?, Target::Cpu),
                Target::Gpu => (self.commit(bytes, &prepacked, Target::Gpu)?, Target::Gpu),
                Target::Auto => match self.commit(bytes, &prepacked, Target::Gpu) {
                    Ok(session) => (session, Target::Gpu),
                    Err(e) => {
                        tracing::info!(reason = %e, "auto target: ONNX Runtime GPU unavailable, using the CPU");
                        (self.commit(bytes, &prepacked, Target::Cpu)?, Target::Cpu)
                    }
                },
            };
            let inputs = first
                .inputs()
                .iter()
                .map(|outlet| {
                    let (info, native_type) = tensor_info(outlet.name(), outlet.dtype());
                    match info.ty {
                        Some(_) => Ok(info),
                        None => Err(EngineError::Unsupported(format!(
                            "input `{}` has type {native_type}, which nimbus tensors cannot carry \
                             (they carry fp16, fp32, fp64, bf16, u8, i32, i64)",
                            outlet.name()
                        ))),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            let outputs = first
                .outputs()
                .iter()
                .map(|outlet| tensor_info(outlet.name(), outlet.dtype()).0)
                .collect();
            let mut pool = Vec::with_capacity(sessions);
            pool.push(first);
            for _ in 1..sessions {
                pool.push(self.commit(bytes, &prepacked, target)?);
            }
            Ok(OrtModel {
                target,
                inputs,
                outputs,
                sessions: Pool::new(pool),
            })
        })
    }

    /// Builds one session for `target`; a GPU target registers CUDA with error-on-failure, so a
    /// session is never silently created on the CPU instead.
    fn commit(
        &self,
        bytes: &[u8],
        prepacked: &PrepackedWeights,
        target: Target,
    ) -> Result<Session, EngineError> {
        let runtime = |e: ort::Error<SessionBuilder>| {
            EngineError::Runtime(format!("ONNX Runtime session options: {}", ort_error(&e)))
        };
        let mut builder = Session::builder(&self.env)
            .map_err(|e| EngineError::Runtime(ort_error(&e)))?
            .with_prepacked_weights(prepacked)
            .map_err(runtime)?;
        if target == Target::Gpu {
            if !ort::ep::CUDA::is_available().unwrap_or(false) {
                return Err(EngineError::Unsupported(
                    "gpu target requested but this ONNX Runtime library has no CUDA execution \
                     provider (a GPU needs the onnxruntime-gpu build of the library)"
                        .into(),
                ));
            }
            builder = builder
                .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                .map_err(|e| {
                    EngineError::Unsupported(format!(
                        "gpu target requested but the ONNX Runtime CUDA execution provider is \
                         unavailable: {} (a GPU needs the onnxruntime-gpu build of the library, \
                         CUDA and cuDNN)",
                        e.message()
                    ))
                })?;
        }
        builder.commit_from_memory(bytes).map_err(|e| {
            let message = format!("ONNX Runtime cannot load the model: {}", ort_error(&e));
            match e.code() {
                ort::ErrorCode::NotImplemented => EngineError::Unsupported(message),
                ort::ErrorCode::ExecutionProviderFailure if target == Target::Gpu => {
                    EngineError::Unsupported(format!("gpu target requested but {message}"))
                }
                ort::ErrorCode::InvalidProtobuf
                | ort::ErrorCode::InvalidGraph
                | ort::ErrorCode::NoModel
                | ort::ErrorCode::InvalidArgument
                | ort::ErrorCode::GenericFailure => EngineError::InvalidEncoding(message),
                _ => EngineError::Runtime(message),
            }
        })
    }
}

/// The nimbus element type for an ONNX Runtime one, if there is one.
fn element_type(ty: TensorElementType) -> Option<ElementType> {
    Some(match ty {
        TensorElementType::Float16 => ElementType::F16,
        TensorElementType::Float32 => ElementType::F32,
        TensorElementType::Float64 => ElementType::F64,
        TensorElementType::Bfloat16 => ElementType::Bf16,
        TensorElementType::Uint8 => ElementType::U8,
        TensorElementType::Int32 => ElementType::I32,
        TensorElementType::Int64 => ElementType::I64,
        _ => return None,
    })
}

/// A `TensorInfo` and the native type's name (for messages about types nimbus cannot carry).
fn tensor_info(name: &str, dtype: &ValueType) -> (TensorInfo, String) {
    match dtype {
        ValueType::Tensor { ty, shape, .. } => (
            TensorInfo {
                name: name.to_string(),
                ty: element_type(*ty),
                dims: shape.iter().map(|&d| u64::try_from(d).ok()).collect(),
            },
            format!("tensor({ty})"),
        ),
        other => (
            TensorInfo {
                name: name.to_string(),
                ty: None,
                dims: Vec::new(),
            },
            other.to_string(),
        ),
    }
}

/// A model loaded on ONNX Runtime: a pool of sessions over the same model.
pub(crate) struct OrtModel {
    target: Target,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    sessions: Pool<Session>,
}

fn to_value<T>(tensor: &Tensor) -> Result<DynValue, EngineError>
where
    T: Element + ort::value::PrimitiveTensorElementType + std::fmt::Debug,
{
    let shape: Vec<i64> = tensor.dims.iter().map(|&d| i64::from(d)).collect();
    ort::value::Tensor::<T>::from_array((shape, decode::<T>(&tensor.data)))
        .map(|t| t.into_dyn())
        .map_err(|e| EngineError::Runtime(format!("creating an input tensor: {}", ort_error(&e))))
}

fn input_value(tensor: &Tensor) -> Result<DynValue, EngineError> {
    match tensor.ty {
        ElementType::F16 => to_value::<f16>(tensor),
        ElementType::F32 => to_value::<f32>(tensor),
        ElementType::F64 => to_value::<f64>(tensor),
        ElementType::Bf16 => to_value::<bf16>(tensor),
        ElementType::U8 => to_value::<u8>(tensor),
        ElementType::I32 => to_value::<i32>(tensor),
        ElementType::I64 => to_value::<i64>(tensor),
    }
}

fn extract<T>(name: &str, value: &DynValue) -> Result<(Vec<u32>, Vec<u8>), EngineError>
where
    T: Element + ort::value::PrimitiveTensorElementType,
{
    let (shape, values) = value
        .try_extract_tensor::<T>()
        .map_err(|e| EngineError::Runtime(format!("reading output `{name}`: {}", ort_error(&e))))?;
    let dims = shape
        .iter()
        .map(|&d| u32::try_from(d))
        .collect::<Result<Vec<u32>, _>>()
        .map_err(|_| {
            EngineError::Runtime(format!(
                "output `{name}` has shape {shape:?}, beyond what a tensor can describe"
            ))
        })?;
    Ok((dims, encode(values)))
}

fn output_tensor(name: &str, value: &DynValue) -> Result<Tensor, EngineError> {
    let ty = match value.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => {
            return Err(EngineError::Unsupported(format!(
                "output `{name}` is a {other}, not a tensor; nimbus returns tensors only"
            )));
        }
    };
    let nimbus_ty = element_type(ty).ok_or_else(|| {
        EngineError::Unsupported(format!(
            "output `{name}` has element type {ty}, which nimbus tensors cannot carry \
             (they carry fp16, fp32, fp64, bf16, u8, i32, i64)"
        ))
    })?;
    let (dims, data) = match nimbus_ty {
        ElementType::F16 => extract::<f16>(name, value)?,
        ElementType::F32 => extract::<f32>(name, value)?,
        ElementType::F64 => extract::<f64>(name, value)?,
        ElementType::Bf16 => extract::<bf16>(name, value)?,
        ElementType::U8 => extract::<u8>(name, value)?,
        ElementType::I32 => extract::<i32>(name, value)?,
        ElementType::I64 => extract::<i64>(name, value)?,
    };
    Ok(Tensor {
        dims,
        ty: nimbus_ty,
        data,
    })
}

impl Model for OrtModel {
    fn engine(&self) -> EngineKind {
        EngineKind::OnnxRuntime
    }

    fn target(&self) -> Target {
        self.target
    }

    fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    fn sessions(&self) -> usize {
        self.sessions.len()
    }

    fn run(&self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, EngineError> {
        validate_inputs(&self.inputs, inputs)?;
        native("running a model on ONNX Runtime", || {
            // Values are built before a session is taken, so a session is held only while it runs.
            let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
            for info in &self.inputs {
                if let Some((_, tensor)) = inputs.iter().find(|(name, _)| name == &info.name) {
                    values.push((
                        Cow::Borrowed(info.name.as_str()),
                        input_value(tensor)?.into(),
                    ));
                }
            }
            let mut session = self.sessions.get();
            let outputs = session.run(values).map_err(|e| {
                let message = format!("ONNX Runtime run failed: {}", ort_error(&e));
                match e.code() {
                    ort::ErrorCode::InvalidArgument => EngineError::InvalidArgument(message),
                    _ => EngineError::Runtime(message),
                }
            })?;
            outputs
                .iter()
                .map(|(name, value)| Ok((name.to_string(), output_tensor(name, &value)?)))
                .collect()
        })
    }
}
