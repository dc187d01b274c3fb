//! OpenVINO, through the `openvino` crate (`runtime-linking`).
//!
//! This module owns the process-wide OpenVINO library (`openvino-sys` keeps one loaded library
//! per process, so the first successful [`OvEngine::init`] fixes it), an `ov::Core` per
//! [`crate::Engines`], and [`OvModel`].
//!
//! A model is read from its ONNX bytes (no weights buffer: ONNX carries its weights) and compiled
//! once; the compiled model is asked for `sessions` streams and the model keeps `sessions` infer
//! requests in a pool, so up to `sessions` runs execute in parallel on one compiled model. The
//! binding's `Core` and `CompiledModel` are `Send` but not `Sync`; each sits behind a `Mutex`
//! (the core is locked only while reading and compiling, the compiled model never after loading),
//! and each `InferRequest` is used by one thread at a time through the pool, as OpenVINO requires.
//! No `unsafe impl` is needed.
//!
//! Limits of the engine that show through: OpenVINO's CPU and GPU plugins have no 64-bit
//! arithmetic (i64 runs as i32, f64 as f32), so 64-bit inputs the narrowing would change are
//! refused (see [`check_narrowing`]); the model is compiled with `INFERENCE_PRECISION_HINT=f32`
//! so that the plugins do not drop to bf16/f16 on their own; only ONNX bytes are accepted.

use std::path::Path;
use std::sync::Mutex;

use openvino::{
    CompiledModel, Core, DeviceType, InferRequest, InferenceError, InferenceErrorKind, Node,
    RwPropertyKey, Shape,
};

use crate::guard::native;
use crate::library::{CheckedLibrary, FIX_HINT, check_openvino, openvino_library_path};
use crate::pool::Pool;
use crate::tensor::{le_to_native, native_to_le};
use crate::validate::{byte_len, validate_inputs};
use crate::{ElementType, EngineError, EngineKind, Model, Target, Tensor, TensorInfo, onnx};

/// The one OpenVINO C library `openvino-sys` has loaded in this process.
static OPENVINO: Mutex<Option<CheckedLibrary>> = Mutex::new(None);

fn ov_error(e: &InferenceError) -> String {
    e.to_string()
}

/// A loaded OpenVINO.
pub(crate) struct OvEngine {
    core: Mutex<Core>,
    version: String,
    intra_op_threads: Option<usize>,
}

impl OvEngine {
    /// Checks `libopenvino_c.so` in `dir` (see `library::check_openvino`), hands it to
    /// `openvino-sys`, and creates a core (which finds the plugins next to the library).
    pub(crate) fn init(dir: &Path, intra_op_threads: Option<usize>) -> Result<OvEngine, String> {
        if !dir.is_dir() {
            return Err(format!(
                "OpenVINO folder `{}` does not exist; {FIX_HINT}",
                dir.display()
            ));
        }
        let checked = check_openvino(&openvino_library_path(dir))?;
        let version = checked.version.clone();
        {
            let mut global = OPENVINO.lock().unwrap_or_else(|p| p.into_inner());
            match global.as_ref() {
                Some(existing) if existing.path != checked.path => {
                    return Err(format!(
                        "OpenVINO is already loaded in this process from `{}`; cannot also load `{}`",
                        existing.path.display(),
                        checked.path.display()
                    ));
                }
                Some(_) => {}
                None => {
                    let path = checked.path.clone();
                    native("loading OpenVINO", || {
                        openvino_sys::library::load_from(path).map_err(EngineError::Unavailable)
                    })
                    .map_err(|e| format!("`{}`: {e}; {FIX_HINT}", checked.path.display()))?;
                    *global = Some(checked);
                }
            }
        }
        let core = native("creating an OpenVINO core", || {
            Core::new().map_err(|e| EngineError::Unavailable(e.to_string()))
        })
        .map_err(|e| format!("creating an OpenVINO core failed: {e}"))?;
        Ok(OvEngine {
            core: Mutex::new(core),
            version,
            intra_op_threads,
        })
    }

    pub(crate) fn version(&self) -> &str {
        &self.version
    }

    pub(crate) fn load_model(
        &self,
        bytes: &[u8],
        target: Target,
        sessions: usize,
    ) -> Result<OvModel, EngineError> {
        // Only well-formed ONNX reaches OpenVINO's frontends; see `onnx`.
        let io = onnx::graph_io(bytes).map_err(EngineError::InvalidEncoding)?;
        native("loading a model on OpenVINO", || {
            let mut core = self.core.lock().unwrap_or_else(|p| p.into_inner());
            let model = core.read_model_from_buffer(bytes, None).map_err(|e| {
                let message = format!("OpenVINO cannot read the model: {}", ov_error(&e));
                // Operators OpenVINO has no conversion for (e.g. ai.onnx.ml) are a limit of the
                // engine, not a broken file.
                let unsupported = [
                    "OpConversionFailure",
                    "No conversion rule",
                    "not supported",
                    "Unsupported",
                    "does not support",
                ];
                if unsupported.iter().any(|needle| message.contains(needle)) {
                    EngineError::Unsupported(message)
                } else {
                    EngineError::InvalidEncoding(message)
                }
            })?;
            let (mut compiled, target) = match target {
                Target::Cpu => (
                    self.compile(&mut core, &model, Target::Cpu, sessions)?,
                    Target::Cpu,
                ),
                Target::Gpu => (
                    self.compile(&mut core, &model, Target::Gpu, sessions)?,
                    Target::Gpu,
                ),
                Target::Auto => match self.compile(&mut core, &model, Target::Gpu, sessions) {
                    Ok(compiled) => (compiled, Target::Gpu),
                    Err(e) => {
                        tracing::info!(reason = %e, "auto target: OpenVINO GPU unavailable, using the CPU");
                        (
                            self.compile(&mut core, &model, Target::Cpu, sessions)?,
                            Target::Cpu,
                        )
                    }
                },
            };
            drop(core);

            let runtime = |what: &str, e: InferenceError| {
                EngineError::Runtime(format!("OpenVINO {what}: {}", ov_error(&e)))
            };
            let n_inputs = compiled
                .get_input_size()
                .map_err(|e| runtime("model inputs", e))?;
            let n_outputs = compiled
                .get_output_size()
                .map_err(|e| runtime("model outputs", e))?;
            let mut inputs = Vec::with_capacity(n_inputs);
            for i in 0..n_inputs {
                let port = compiled
                    .get_input_by_index(i)
                    .map_err(|e| runtime("model input", e))?;
                let name = onnx_name(&io.inputs, n_inputs, i, &port);
                let (info, native_type) = port_info(name, &port)?;
                if info.ty.is_none() {
                    return Err(EngineError::Unsupported(format!(
                        "input `{}` has type {native_type}, which nimbus tensors cannot carry \
                         (they carry fp16, fp32, fp64, bf16, u8, i32, i64)",
                        info.name
                    )));
                }
                inputs.push(info);
            }
            let mut outputs = Vec::with_capacity(n_outputs);
            for i in 0..n_outputs {
                let port = compiled
                    .get_output_by_index(i)
                    .map_err(|e| runtime("model output", e))?;
                let name = onnx_name(&io.outputs, n_outputs, i, &port);
                outputs.push(port_info(name, &port)?.0);
            }
            let requests = (0..sessions)
                .map(|_| compiled.create_infer_request())
                .collect::<Result<Vec<InferRequest>, _>>()
                .map_err(|e| runtime("creating an infer request", e))?;
            Ok(OvModel {
                target,
                inputs,
                outputs,
                requests: Pool::new(requests),
                _compiled: Mutex::new(compiled),
            })
        })
    }

    /// Compiles for the CPU, or for the GPU without falling back: no GPU device, or a failed
    /// compile on it, is [`EngineError::Unsupported`].
    fn compile(
        &self,
        core: &mut Core,
        model: &openvino::Model,
        target: Target,
        sessions: usize,
    ) -> Result<CompiledModel, EngineError> {
        let device = if target == Target::Gpu {
            let devices = core.available_devices().map_err(|e| {
                EngineError::Unsupported(format!(
                    "gpu target requested but OpenVINO cannot list its devices: {}",
                    ov_error(&e)
                ))
            })?;
            let names: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
            if !names.iter().any(|d| d.starts_with("GPU")) {
                return Err(EngineError::Unsupported(format!(
                    "gpu target requested but OpenVINO has no GPU device (available: {})",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                )));
            }
            DeviceType::GPU
        } else {
            DeviceType::CPU
        };
        let fail = |what: String| match target {
            Target::Gpu => EngineError::Unsupported(format!(
                "gpu target requested but the OpenVINO GPU device is unavailable: {what}"
            )),
            _ => EngineError::Runtime(what),
        };
        // Core properties persist across compiles, so every compile sets all of its own.
        let mut properties = vec![
            // One stream per infer request: that many runs execute in parallel.
            (RwPropertyKey::NumStreams, sessions.to_string()),
            // Keep the model's precision: the CPU plugin would otherwise pick bf16 on CPUs with
            // AMX/AVX512-BF16 (and the GPU plugin f16), changing results.
            (RwPropertyKey::HintInferencePrecision, "f32".to_string()),
        ];
        if let Some(threads) = self.intra_op_threads {
            properties.push((RwPropertyKey::InferenceNumThreads, threads.to_string()));
        }
        for (key, value) in properties {
            core.set_property(&device, &key, &value).map_err(|e| {
                fail(format!(
                    "setting {} = {value} on {device}: {}",
                    key.as_ref(),
                    ov_error(&e)
                ))
            })?;
        }
        core.compile_model(model, device.to_owned()).map_err(|e| {
            fail(format!(
                "OpenVINO cannot compile the model for {device}: {}",
                ov_error(&e)
            ))
        })
    }
}

/// The ONNX graph's name for port `index` when the graph and the compiled model agree on the
/// count (OpenVINO keeps the graph's order), else the port's own "any" name.
fn onnx_name(names: &[String], ports: usize, index: usize, port: &Node) -> String {
    match names.get(index) {
        Some(name) if names.len() == ports && !name.is_empty() => name.clone(),
        _ => port.get_name().unwrap_or_else(|_| format!("output{index}")),
    }
}

/// The nimbus element type for an OpenVINO one, if there is one.
fn element_type(ty: openvino::ElementType) -> Option<ElementType> {
    use openvino::ElementType as Ov;
    Some(match ty {
        Ov::F16 => ElementType::F16,
        Ov::F32 => ElementType::F32,
        Ov::F64 => ElementType::F64,
        Ov::Bf16 => ElementType::Bf16,
        Ov::U8 => ElementType::U8,
        Ov::I32 => ElementType::I32,
        Ov::I64 => ElementType::I64,
        _ => return None,
    })
}

fn ov_element_type(ty: ElementType) -> openvino::ElementType {
    use openvino::ElementType as Ov;
    match ty {
        ElementType::F16 => Ov::F16,
        ElementType::F32 => Ov::F32,
        ElementType::F64 => Ov::F64,
        ElementType::Bf16 => Ov::Bf16,
        ElementType::U8 => Ov::U8,
        ElementType::I32 => Ov::I32,
        ElementType::I64 => Ov::I64,
    }
}

/// A port's `TensorInfo` and its native type's name.
fn port_info(name: String, port: &Node) -> Result<(TensorInfo, String), EngineError> {
    let runtime = |e: InferenceError| {
        EngineError::Runtime(format!("OpenVINO port `{name}`: {}", ov_error(&e)))
    };
    let ty = port.get_element_type().map_err(runtime)?;
    let shape = port.get_partial_shape().map_err(runtime)?;
    let dims = shape
        .get_dimensions()
        .iter()
        // Static: min == max (>= 0); dynamic: max is -1, or a bounded range min < max.
        .map(|d| {
            (d.get_min() == d.get_max())
                .then(|| u64::try_from(d.get_max()).ok())
                .flatten()
        })
        .collect();
    Ok((
        TensorInfo {
            name,
            ty: element_type(ty),
            dims,
        },
        ty.to_string(),
    ))
}

/// A model compiled by OpenVINO, with a pool of infer requests.
pub(crate) struct OvModel {
    target: Target,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    requests: Pool<InferRequest>,
    /// Kept for the requests' lifetime; never used after loading (the lock only makes it `Sync`).
    _compiled: Mutex<CompiledModel>,
}

fn runtime(what: &str, e: InferenceError) -> EngineError {
    let message = format!("OpenVINO {what}: {}", ov_error(&e));
    match e.kind {
        InferenceErrorKind::ParameterMismatch => EngineError::InvalidArgument(message),
        _ => EngineError::Runtime(message),
    }
}

/// OpenVINO's CPU and GPU plugins have no 64-bit arithmetic: i64 tensors are computed as i32
/// (an i64 input is narrowed to its low 32 bits as it enters the device) and f64 tensors as f32
/// (a value beyond the f32 range becomes ±f32::MAX or ±inf). Inputs that this narrowing would
/// change beyond precision are refused instead of coming back silently wrong; ONNX Runtime keeps
/// full 64-bit values. (Arithmetic inside the model still runs at 32 bits on OpenVINO: an i64 sum
/// can wrap at 2^31 and f64 results carry f32 precision.)
fn check_narrowing(name: &str, tensor: &Tensor) -> Result<(), EngineError> {
    let refuse = |index: usize, value: String, ty: &str, range: &str| {
        Err(EngineError::Unsupported(format!(
            "OpenVINO computes {ty} tensors as {range}, and input `{name}` holds {value} (element \
             {index}), outside the {range} range; use the onnxruntime engine for such values"
        )))
    };
    let words = || {
        tensor.data.chunks_exact(8).map(|c| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(c);
            raw
        })
    };
    match tensor.ty {
        ElementType::I64 => {
            let outside = words()
                .map(i64::from_le_bytes)
                .enumerate()
                .find(|(_, v)| i32::try_from(*v).is_err());
            match outside {
                Some((index, value)) => refuse(index, value.to_string(), "i64", "i32"),
                None => Ok(()),
            }
        }
        ElementType::F64 => {
            let outside = words()
                .map(f64::from_le_bytes)
                .enumerate()
                .find(|(_, v)| v.is_finite() && v.abs() > f64::from(f32::MAX));
            match outside {
                Some((index, value)) => refuse(index, format!("{value:e}"), "f64", "f32"),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

fn input_tensor(name: &str, tensor: &Tensor) -> Result<openvino::Tensor, EngineError> {
    let dims: Vec<i64> = tensor.dims.iter().map(|&d| i64::from(d)).collect();
    let shape = Shape::new(&dims).map_err(|e| runtime(&format!("input `{name}` shape"), e))?;
    let mut ov = openvino::Tensor::new(ov_element_type(tensor.ty), &shape)
        .map_err(|e| runtime(&format!("input `{name}` tensor"), e))?;
    // An empty tensor may have no buffer at all: only touch the data when there is some.
    if !tensor.data.is_empty() {
        let dst = ov
            .get_raw_data_mut()
            .map_err(|e| runtime(&format!("input `{name}` data"), e))?;
        if dst.len() != tensor.data.len() {
            return Err(EngineError::Runtime(format!(
                "OpenVINO allocated {} bytes for input `{name}`, expected {}",
                dst.len(),
                tensor.data.len()
            )));
        }
        le_to_native(tensor.ty, &tensor.data, dst);
    }
    Ok(ov)
}

fn output_tensor(name: &str, ov: &openvino::Tensor) -> Result<Tensor, EngineError> {
    let native_ty = ov
        .get_element_type()
        .map_err(|e| runtime(&format!("output `{name}` type"), e))?;
    let ty = element_type(native_ty).ok_or_else(|| {
        EngineError::Unsupported(format!(
            "output `{name}` has element type {native_ty}, which nimbus tensors cannot carry \
             (they carry fp16, fp32, fp64, bf16, u8, i32, i64)"
        ))
    })?;
    let shape = ov
        .get_shape()
        .map_err(|e| runtime(&format!("output `{name}` shape"), e))?;
    let dims = shape
        .get_dimensions()
        .iter()
        .map(|&d| u32::try_from(d))
        .collect::<Result<Vec<u32>, _>>()
        .map_err(|_| {
            EngineError::Runtime(format!(
                "output `{name}` has shape {:?}, beyond what a tensor can describe",
                shape.get_dimensions()
            ))
        })?;
    let expected = byte_len(&dims, ty)?;
    let size = ov
        .get_byte_size()
        .map_err(|e| runtime(&format!("output `{name}` size"), e))?;
    if size != expected {
        return Err(EngineError::Runtime(format!(
            "OpenVINO output `{name}` has {size} bytes for a {ty} tensor of shape {dims:?}"
        )));
    }
    let data = if size == 0 {
        Vec::new()
    } else {
        let raw = ov
            .get_raw_data()
            .map_err(|e| runtime(&format!("output `{name}` data"), e))?;
        native_to_le(ty, raw)
    };
    Ok(Tensor { dims, ty, data })
}

impl Model for OvModel {
    fn engine(&self) -> EngineKind {
        EngineKind::OpenVino
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
        self.requests.len()
    }

    fn run(&self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, EngineError> {
        validate_inputs(&self.inputs, inputs)?;
        for (name, tensor) in inputs {
            check_narrowing(name, tensor)?;
        }
        native("running a model on OpenVINO", || {
            // Tensors are built before a request is taken, so a request is held only while it runs.
            let mut tensors = Vec::with_capacity(self.inputs.len());
            for info in &self.inputs {
                if let Some((_, tensor)) = inputs.iter().find(|(name, _)| name == &info.name) {
                    tensors.push(input_tensor(&info.name, tensor)?);
                }
            }
            let mut request = self.requests.get();
            for (index, (tensor, info)) in tensors.iter().zip(&self.inputs).enumerate() {
                request
                    .set_input_tensor_by_index(index, tensor)
                    .map_err(|e| runtime(&format!("setting input `{}`", info.name), e))?;
            }
            request
                .infer()
                .map_err(|e| runtime("inference failed", e))?;
            let mut outputs = Vec::with_capacity(self.outputs.len());
            for (index, info) in self.outputs.iter().enumerate() {
                let ov = request
                    .get_output_tensor_by_index(index)
                    .map_err(|e| runtime(&format!("reading output `{}`", info.name), e))?;
                outputs.push((info.name.clone(), output_tensor(&info.name, &ov)?));
            }
            Ok(outputs)
        })
    }
}
