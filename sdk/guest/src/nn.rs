//! wasi-nn for Nimbus functions (`wasi:nn@0.2.0-rc-2024-10-28`, the text in the repository's
//! `wit/wasi-nn.wit`).
//!
//! This module owns:
//! - [`raw`]: the bindings `wit-bindgen` generates from that WIT, unchanged. Use them to do what
//!   the typed layer refuses to (tests that misbehave on purpose).
//! - a typed layer: [`Graph`] (a loaded model), [`Context`] (an execution context on it),
//!   [`Tensor`] (owned dims + element type + little-endian bytes, turned into a wasi-nn tensor
//!   resource only for the duration of [`Context::compute`]), and [`NnError`] (the host's error
//!   code and message as plain strings).
//!
//! In Nimbus a function loads models with [`Graph::load_by_name`], by the guest-visible name its
//! manifest binds (`[models] image-classifier = "efficientnet"`); it never names host paths.

use std::fmt;

/// The raw `wit-bindgen` bindings of `wit/wasi-nn.wit` (world `wasi:nn/ml`).
///
/// `raw::tensor`, `raw::graph`, `raw::inference` and `raw::errors` are the four interfaces.
pub mod raw {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "wasi:nn/ml",
    });

    pub use self::wasi::nn::{errors, graph, inference, tensor};
}

pub use raw::errors::ErrorCode;
pub use raw::graph::{ExecutionTarget, GraphEncoding};
pub use raw::tensor::TensorType;

/// A wasi-nn error: the WIT error code by its kebab-case name (`"invalid-argument"`,
/// `"not-found"`, ...) and the host's message. Errors the typed layer raises itself (an output
/// that is missing, a tensor of another element type) use the same codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NnError {
    /// Kebab-case name of the wasi-nn `error-code`.
    pub code: String,
    /// What went wrong, as the host (or this crate) said it.
    pub message: String,
}

impl NnError {
    /// An error with `code` and `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        NnError {
            code: code.into(),
            message: message.into(),
        }
    }

    /// Reads the code and message of a host error resource.
    pub fn from_raw(err: &raw::errors::Error) -> Self {
        NnError {
            code: error_code_name(err.code()).to_string(),
            message: err.data(),
        }
    }
}

impl From<raw::errors::Error> for NnError {
    fn from(err: raw::errors::Error) -> Self {
        NnError::from_raw(&err)
    }
}

impl fmt::Display for NnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wasi-nn {}: {}", self.code, self.message)
    }
}

impl std::error::Error for NnError {}

/// The WIT (kebab-case) name of an error code.
pub fn error_code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidArgument => "invalid-argument",
        ErrorCode::InvalidEncoding => "invalid-encoding",
        ErrorCode::Timeout => "timeout",
        ErrorCode::RuntimeError => "runtime-error",
        ErrorCode::UnsupportedOperation => "unsupported-operation",
        ErrorCode::TooLarge => "too-large",
        ErrorCode::NotFound => "not-found",
        ErrorCode::Security => "security",
        ErrorCode::Unknown => "unknown",
    }
}

impl TensorType {
    /// Lower-case name: `fp16`, `fp32`, `fp64`, `bf16`, `u8`, `i32`, `i64`.
    pub fn name(self) -> &'static str {
        match self {
            TensorType::Fp16 => "fp16",
            TensorType::Fp32 => "fp32",
            TensorType::Fp64 => "fp64",
            TensorType::Bf16 => "bf16",
            TensorType::U8 => "u8",
            TensorType::I32 => "i32",
            TensorType::I64 => "i64",
        }
    }

    /// Bytes per element.
    pub fn element_size(self) -> usize {
        match self {
            TensorType::U8 => 1,
            TensorType::Fp16 | TensorType::Bf16 => 2,
            TensorType::Fp32 | TensorType::I32 => 4,
            TensorType::Fp64 | TensorType::I64 => 8,
        }
    }
}

/// An owned tensor: dimensions, element type, row-major little-endian bytes.
///
/// Constructors do not check that `data` matches `dims`: the host checks every tensor it is
/// given and answers `invalid-argument` when they disagree.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// One entry per dimension.
    pub dims: Vec<u32>,
    /// Element type.
    pub ty: TensorType,
    /// Row-major little-endian element bytes.
    pub data: Vec<u8>,
}

macro_rules! typed_ctor_and_getter {
    ($from:ident, $to:ident, $t:ty, $variant:ident, $size:expr) => {
        #[doc = concat!("A `", stringify!($variant), "` tensor from `", stringify!($t), "` values.")]
        pub fn $from(dims: &[u32], values: &[$t]) -> Tensor {
            let mut data = Vec::with_capacity(values.len() * $size);
            for v in values {
                data.extend_from_slice(&v.to_le_bytes());
            }
            Tensor { dims: dims.to_vec(), ty: TensorType::$variant, data }
        }

        #[doc = concat!("The elements as `", stringify!($t), "`; `invalid-argument` unless the tensor is `",
            stringify!($variant), "` with a whole number of elements.")]
        pub fn $to(&self) -> Result<Vec<$t>, NnError> {
            self.expect_type(TensorType::$variant)?;
            Ok(self
                .data
                .chunks_exact($size)
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")))
                .collect())
        }
    };
}

impl Tensor {
    /// A tensor from its parts, as they are.
    pub fn new(dims: &[u32], ty: TensorType, data: impl Into<Vec<u8>>) -> Tensor {
        Tensor {
            dims: dims.to_vec(),
            ty,
            data: data.into(),
        }
    }

    /// An `FP32` tensor from `f32` values.
    pub fn from_f32(dims: &[u32], values: &[f32]) -> Tensor {
        let mut data = Vec::with_capacity(values.len() * 4);
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        Tensor {
            dims: dims.to_vec(),
            ty: TensorType::Fp32,
            data,
        }
    }

    /// The elements as `f32`. `FP32` is read as it is; `FP16`, `BF16` and `FP64` are
    /// converted (FP64 with rounding). Integer tensors and a byte length that is not a whole
    /// number of elements give `invalid-argument`.
    pub fn to_f32(&self) -> Result<Vec<f32>, NnError> {
        let size = self.ty.element_size();
        if !self.data.len().is_multiple_of(size) {
            return Err(self.ragged());
        }
        let chunks = self.data.chunks_exact(size);
        Ok(match self.ty {
            TensorType::Fp32 => chunks
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            TensorType::Fp64 => chunks
                .map(|c| f64::from_le_bytes(c.try_into().expect("chunk size")) as f32)
                .collect(),
            TensorType::Bf16 => chunks
                .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                .collect(),
            TensorType::Fp16 => chunks
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            other => {
                return Err(NnError::new(
                    "invalid-argument",
                    format!("tensor is {}, not a floating-point type", other.name()),
                ));
            }
        })
    }

    typed_ctor_and_getter!(from_f64, to_f64, f64, Fp64, 8);
    typed_ctor_and_getter!(from_i32, to_i32, i32, I32, 4);
    typed_ctor_and_getter!(from_i64, to_i64, i64, I64, 8);
    typed_ctor_and_getter!(from_u8, to_u8, u8, U8, 1);

    /// Product of the dimensions, `None` on overflow.
    pub fn element_count(&self) -> Option<u64> {
        self.dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(u64::from(d)))
    }

    /// Creates the wasi-nn tensor resource for this tensor (the host copies the bytes).
    pub fn to_raw(&self) -> raw::tensor::Tensor {
        raw::tensor::Tensor::new(&self.dims, self.ty, &self.data)
    }

    /// Reads a wasi-nn tensor resource into an owned tensor.
    pub fn from_raw(tensor: &raw::tensor::Tensor) -> Tensor {
        Tensor {
            dims: tensor.dimensions(),
            ty: tensor.ty(),
            data: tensor.data(),
        }
    }

    fn expect_type(&self, ty: TensorType) -> Result<(), NnError> {
        if self.ty != ty {
            return Err(NnError::new(
                "invalid-argument",
                format!("tensor is {}, not {}", self.ty.name(), ty.name()),
            ));
        }
        if !self.data.len().is_multiple_of(ty.element_size()) {
            return Err(self.ragged());
        }
        Ok(())
    }

    fn ragged(&self) -> NnError {
        NnError::new(
            "invalid-argument",
            format!(
                "tensor data is {} bytes, not a whole number of {} elements",
                self.data.len(),
                self.ty.name()
            ),
        )
    }
}

/// IEEE 754 half precision to single precision (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = frac * 2^-24.
            let v = frac as f32 * f32::from_bits(0x3380_0000); // 2^-24
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// A model loaded into an engine on the host.
#[derive(Debug)]
pub struct Graph {
    raw: raw::graph::Graph,
}

impl Graph {
    /// Loads the model bound to this function under the guest-visible `name` (the key in the
    /// manifest's `[models]`). Unknown names give `not-found`.
    pub fn load_by_name(name: &str) -> Result<Graph, NnError> {
        Ok(Graph {
            raw: raw::graph::load_by_name(name)?,
        })
    }

    /// Loads a model from bytes the guest holds (`parts`: one entry for ONNX, xml + weights for
    /// OpenVINO IR). The parts are copied once to build the call. Hosts may cap the size or turn
    /// this off.
    pub fn load<P: AsRef<[u8]>>(
        parts: &[P],
        encoding: GraphEncoding,
        target: ExecutionTarget,
    ) -> Result<Graph, NnError> {
        let builders: Vec<Vec<u8>> = parts.iter().map(|p| p.as_ref().to_vec()).collect();
        Ok(Graph {
            raw: raw::graph::load(&builders, encoding, target)?,
        })
    }

    /// A new execution context on this graph.
    pub fn context(&self) -> Result<Context, NnError> {
        Ok(Context {
            raw: self.raw.init_execution_context()?,
        })
    }

    /// The underlying resource.
    pub fn raw(&self) -> &raw::graph::Graph {
        &self.raw
    }
}

/// An execution context: runs the graph on named inputs.
#[derive(Debug)]
pub struct Context {
    raw: raw::inference::GraphExecutionContext,
}

impl Context {
    /// Runs the graph with `inputs` (graph input name, tensor) and returns every output the host
    /// produced, by its real name, in the host's order.
    pub fn compute<S: AsRef<str>>(
        &self,
        inputs: &[(S, Tensor)],
    ) -> Result<Vec<(String, Tensor)>, NnError> {
        let raw_inputs: Vec<raw::inference::NamedTensor> = inputs
            .iter()
            .map(|(name, t)| (name.as_ref().to_string(), t.to_raw()))
            .collect();
        let outputs = self.raw.compute(raw_inputs)?;
        Ok(outputs
            .into_iter()
            .map(|(name, t)| (name, Tensor::from_raw(&t)))
            .collect())
    }

    /// The underlying resource.
    pub fn raw(&self) -> &raw::inference::GraphExecutionContext {
        &self.raw
    }
}

/// The output called `name` among `outputs`, or `not-found` naming the outputs there are.
pub fn output<'a>(outputs: &'a [(String, Tensor)], name: &str) -> Result<&'a Tensor, NnError> {
    outputs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| {
            let names: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
            NnError::new(
                "not-found",
                format!(
                    "the model has no output {name:?} (outputs: {})",
                    names.join(", ")
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_round_trip() {
        let t = Tensor::from_f32(&[2], &[1.5, -2.25]);
        assert_eq!(t.data.len(), 8);
        assert_eq!(t.to_f32().unwrap(), vec![1.5, -2.25]);
        assert!(t.to_i32().is_err());
    }

    #[test]
    fn half_floats() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
        let bf = Tensor::new(&[1], TensorType::Bf16, 0x3f80u16.to_le_bytes().to_vec());
        assert_eq!(bf.to_f32().unwrap(), vec![1.0]);
    }

    #[test]
    fn ragged_data_is_an_error() {
        let t = Tensor::new(&[1], TensorType::Fp32, vec![0u8; 3]);
        assert_eq!(t.to_f32().unwrap_err().code, "invalid-argument");
    }
}
