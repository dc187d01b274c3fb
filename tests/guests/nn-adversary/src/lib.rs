//! `nn-adversary`: a test guest that hands the wasi-nn host the inputs it must refuse, one route
//! each, through the raw bindings (`nimbus_guest::nn::raw`) so nothing is checked guest-side.
//! `/load?name=NAME` calls `load-by-name` with any name the caller picks (another tenant's model
//! names, for the isolation tests) and answers `{"ok": {"loaded": NAME}}` or the error.
//!
//! Every route answers 200 with JSON: `{"error": {"code": "<wasi-nn code>", "message": "...",
//! "stage": "load|context|compute"}}` when the host returned a wasi-nn error (the expected
//! outcome), or `{"ok": {...}}` when the host accepted the call. `/ok` is the control: a correct
//! compute on zeros, `{"ok": {"outputs": ["logits", "probs"]}}`. `/oob` passes an out-of-bounds
//! list to the tensor constructor's canonical-ABI import: the host must trap the guest (500),
//! not crash. Other paths: 404.
//!
//! The manifest binds `image-classifier` to EfficientNet-Lite0 (input `input` f32[N,3,224,224]).

use nimbus_guest::nn::NnError;
use nimbus_guest::nn::raw::graph::{self, ExecutionTarget, GraphEncoding};
use nimbus_guest::nn::raw::inference::{GraphExecutionContext, NamedTensor};
use nimbus_guest::nn::raw::tensor::{Tensor, TensorType};
use nimbus_guest::serde_json::{Value, json};
use nimbus_guest::{Handler, Request, Response};

/// The guest-visible model name bound in nimbus.toml.
const MODEL: &str = "image-classifier";
/// Input dims of the classifier.
const DIMS: [u32; 4] = [1, 3, 224, 224];
/// Elements in one input (1*3*224*224).
const ELEMENTS: usize = 150_528;

/// A wasi-nn error and where it came from.
struct Failure {
    stage: &'static str,
    error: NnError,
}

type Outcome = Result<Value, Failure>;

fn at(stage: &'static str) -> impl FnOnce(nimbus_guest::nn::raw::errors::Error) -> Failure {
    move |e| Failure {
        stage,
        error: NnError::from(e),
    }
}

struct NnAdversary;

impl Handler for NnAdversary {
    fn handle(req: Request) -> Response {
        let outcome = match req.path_only() {
            "/wrong-length" => {
                compute_one("input", || Tensor::new(&DIMS, TensorType::Fp32, &[0u8; 40]))
            }
            "/not-multiple" => compute_one("input", || {
                Tensor::new(&DIMS, TensorType::Fp32, &vec![0u8; ELEMENTS * 4 - 1])
            }),
            "/overflow-dims" => compute_one("input", || {
                Tensor::new(&[u32::MAX; 3], TensorType::Fp32, &[0u8; 16])
            }),
            "/wrong-type" => compute_one("input", || {
                Tensor::new(&DIMS, TensorType::I64, &vec![0u8; ELEMENTS * 8])
            }),
            "/wrong-name" => compute_one("not-an-input", zeros),
            "/no-inputs" => compute(Vec::new),
            "/ok" => compute_one("input", zeros),
            "/unknown-model" => graph::load_by_name("no-such-model")
                .map(|_| json!({ "loaded": "no-such-model" }))
                .map_err(at("load")),
            "/load" => match req.query_param("name") {
                Some(name) => graph::load_by_name(name)
                    .map(|_| json!({ "loaded": name }))
                    .map_err(at("load")),
                None => {
                    return Response::error(400, "bad_request", "use /load?name=<model name>");
                }
            },
            "/tpu" => load_bytes(&[vec![0u8; 16]], ExecutionTarget::Tpu),
            "/gpu" => load_bytes(&[req.body], ExecutionTarget::Gpu),
            "/garbage-model" => load_bytes(&[b"not a model".to_vec()], ExecutionTarget::Cpu),
            "/oob" => oob(),
            other => {
                return Response::error(404, "not_found", &format!("no route {other}"));
            }
        };
        match outcome {
            Ok(ok) => Response::json(200, &json!({ "ok": ok })),
            Err(Failure { stage, error }) => Response::json(
                200,
                &json!({ "error": { "code": error.code, "message": error.message, "stage": stage } }),
            ),
        }
    }
}

nimbus_guest::export_handler!(NnAdversary);

/// A correct input: zeros, f32[1,3,224,224].
fn zeros() -> Tensor {
    Tensor::new(&DIMS, TensorType::Fp32, &vec![0u8; ELEMENTS * 4])
}

fn classifier() -> Result<(graph::Graph, GraphExecutionContext), Failure> {
    let g = graph::load_by_name(MODEL).map_err(at("load"))?;
    let ctx = g.init_execution_context().map_err(at("context"))?;
    Ok((g, ctx))
}

/// Loads the classifier, then builds the inputs (so a host that refuses a tensor at
/// construction does so after the model is there) and computes.
fn compute(inputs: impl FnOnce() -> Vec<NamedTensor>) -> Outcome {
    let (_graph, ctx) = classifier()?;
    let outputs = ctx.compute(inputs()).map_err(at("compute"))?;
    let names: Vec<&str> = outputs.iter().map(|(name, _)| name.as_str()).collect();
    Ok(json!({ "outputs": names }))
}

fn compute_one(name: &str, tensor: impl FnOnce() -> Tensor) -> Outcome {
    compute(move || vec![(name.to_string(), tensor())])
}

fn load_bytes(parts: &[Vec<u8>], target: ExecutionTarget) -> Outcome {
    let g = graph::load(parts, GraphEncoding::Onnx, target).map_err(at("load"))?;
    let _ctx = g.init_execution_context().map_err(at("context"))?;
    Ok(json!({ "loaded": true, "target": format!("{target:?}") }))
}

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "wasi:nn/tensor@0.2.0-rc-2024-10-28")]
unsafe extern "C" {
    /// `[constructor]tensor`, flattened by the canonical ABI exactly as wit-bindgen declares it:
    /// (dimensions: list<u32> as ptr + len, ty: tensor-type as i32, data: list<u8> as
    /// ptr + len) -> own<tensor> as i32.
    #[link_name = "[constructor]tensor"]
    fn tensor_constructor(
        dims_ptr: *mut u8,
        dims_len: usize,
        ty: i32,
        data_ptr: *mut u8,
        data_len: usize,
    ) -> i32;
}

#[cfg(not(target_arch = "wasm32"))]
unsafe fn tensor_constructor(_: *mut u8, _: usize, _: i32, _: *mut u8, _: usize) -> i32 {
    unreachable!("nn-adversary only runs as wasm32-wasip2")
}

/// Calls the tensor constructor with a data list that lies outside linear memory. The host
/// must trap the guest; reaching the end means it accepted.
fn oob() -> Outcome {
    let dims = DIMS;
    // SAFETY: none on purpose; the host must refuse to read 256 MiB at 0xFFFF_FFF0.
    let handle = unsafe {
        tensor_constructor(
            dims.as_ptr().cast::<u8>().cast_mut(),
            dims.len(),
            TensorType::Fp32 as i32,
            0xFFFF_FFF0usize as *mut u8,
            0x1000_0000,
        )
    };
    Ok(json!({ "tensor_handle": handle }))
}
