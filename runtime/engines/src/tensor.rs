//! Tensor bytes and typed values.
//!
//! [`Tensor`] data is row-major little-endian bytes as wasi-nn hands them over: unaligned, of any
//! length. This module owns every conversion between those bytes and typed values (always
//! `from_le_bytes` / `to_le_bytes` on element-sized chunks, never a cast of the guest's buffer), and
//! the typed constructors and accessors on [`Tensor`].

use half::{bf16, f16};

use crate::validate::byte_len;
use crate::{ElementType, EngineError, Tensor};

mod sealed {
    pub trait Sealed {}
}

/// A Rust type that is one of the [`ElementType`]s: `half::f16`, `f32`, `f64`, `half::bf16`, `u8`,
/// `i32`, `i64`.
pub trait Element: Copy + Send + Sync + 'static + sealed::Sealed {
    /// The matching element type.
    const TYPE: ElementType;
    /// Reads one value from exactly `TYPE.size()` little-endian bytes.
    fn from_le_slice(bytes: &[u8]) -> Self;
    /// Appends the value's little-endian bytes.
    fn push_le(self, out: &mut Vec<u8>);
}

macro_rules! element {
    ($ty:ty, $variant:ident, $n:literal) => {
        impl sealed::Sealed for $ty {}
        impl Element for $ty {
            const TYPE: ElementType = ElementType::$variant;
            fn from_le_slice(bytes: &[u8]) -> Self {
                let mut raw = [0u8; $n];
                raw.copy_from_slice(bytes);
                <$ty>::from_le_bytes(raw)
            }
            fn push_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}

element!(f16, F16, 2);
element!(f32, F32, 4);
element!(f64, F64, 8);
element!(bf16, Bf16, 2);
element!(u8, U8, 1);
element!(i32, I32, 4);
element!(i64, I64, 8);

/// Decodes little-endian bytes into values. A trailing partial element is ignored: callers check
/// the length first (see `validate`).
pub(crate) fn decode<T: Element>(data: &[u8]) -> Vec<T> {
    data.chunks_exact(T::TYPE.size())
        .map(T::from_le_slice)
        .collect()
}

/// Encodes values as little-endian bytes.
pub(crate) fn encode<T: Element>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * T::TYPE.size());
    for v in values {
        v.push_le(&mut out);
    }
    out
}

/// Copies little-endian tensor bytes into an engine's native-endian buffer of the same length.
pub(crate) fn le_to_native(ty: ElementType, src: &[u8], dst: &mut [u8]) {
    dst.copy_from_slice(src);
    if cfg!(target_endian = "big") {
        dst.chunks_exact_mut(ty.size()).for_each(<[u8]>::reverse);
    }
}

/// Copies an engine's native-endian buffer into little-endian tensor bytes.
pub(crate) fn native_to_le(ty: ElementType, src: &[u8]) -> Vec<u8> {
    let mut out = src.to_vec();
    if cfg!(target_endian = "big") {
        out.chunks_exact_mut(ty.size()).for_each(<[u8]>::reverse);
    }
    out
}

impl Tensor {
    /// A tensor from raw little-endian bytes; the length must be `product(dims) * ty.size()`.
    pub fn new(dims: Vec<u32>, ty: ElementType, data: Vec<u8>) -> Result<Tensor, EngineError> {
        let expected = byte_len(&dims, ty)?;
        if data.len() != expected {
            return Err(EngineError::InvalidArgument(format!(
                "a {ty} tensor of shape {dims:?} needs {expected} bytes, got {}",
                data.len()
            )));
        }
        Ok(Tensor { dims, ty, data })
    }

    /// A tensor from typed values; `values.len()` must be `product(dims)`.
    pub fn from_values<T: Element>(dims: Vec<u32>, values: &[T]) -> Result<Tensor, EngineError> {
        Tensor::new(dims, T::TYPE, encode(values))
    }

    /// The number of elements, `product(dims)`.
    pub fn element_count(&self) -> Result<usize, EngineError> {
        Ok(byte_len(&self.dims, self.ty)? / self.ty.size())
    }

    /// The values, when the tensor holds `T` and its length matches its shape.
    pub fn to_values<T: Element>(&self) -> Result<Vec<T>, EngineError> {
        if self.ty != T::TYPE {
            return Err(EngineError::InvalidArgument(format!(
                "the tensor holds {}, not {}",
                self.ty,
                T::TYPE
            )));
        }
        let expected = byte_len(&self.dims, self.ty)?;
        if self.data.len() != expected {
            return Err(EngineError::InvalidArgument(format!(
                "a {} tensor of shape {:?} needs {expected} bytes, has {}",
                self.ty,
                self.dims,
                self.data.len()
            )));
        }
        Ok(decode(&self.data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_type_from_unaligned_bytes() {
        // An odd offset: the slice handed to `decode` is not aligned for any multi-byte type.
        let mut buffer = vec![0xAAu8];
        buffer.extend(encode(&[1.5f64, -2.25, f64::MAX]));
        assert_eq!(decode::<f64>(&buffer[1..]), vec![1.5, -2.25, f64::MAX]);

        let t = Tensor::from_values(vec![2], &[f16::from_f32(0.5), f16::from_f32(-3.0)]).unwrap();
        assert_eq!(t.data, vec![0x00, 0x38, 0x00, 0xC2]);
        assert_eq!(
            t.to_values::<f16>().unwrap(),
            vec![f16::from_f32(0.5), f16::from_f32(-3.0)]
        );
        let t =
            Tensor::from_values(vec![1, 2], &[bf16::from_f32(1.0), bf16::from_f32(-2.0)]).unwrap();
        assert_eq!(t.data, vec![0x80, 0x3F, 0x00, 0xC0]);
        let t = Tensor::from_values(vec![3], &[i64::MIN, 0, i64::MAX]).unwrap();
        assert_eq!(t.to_values::<i64>().unwrap(), vec![i64::MIN, 0, i64::MAX]);
        let t = Tensor::from_values(vec![2], &[i32::MIN, 7]).unwrap();
        assert_eq!(&t.data[4..], &7i32.to_le_bytes());
        let t = Tensor::from_values(vec![2, 2], &[1u8, 2, 3, 4]).unwrap();
        assert_eq!(t.data, vec![1, 2, 3, 4]);
        assert_eq!(t.element_count().unwrap(), 4);
        let t = Tensor::from_values(vec![1], &[f32::NEG_INFINITY]).unwrap();
        assert_eq!(t.to_values::<f32>().unwrap(), vec![f32::NEG_INFINITY]);
    }

    #[test]
    fn typed_access_checks_type_and_length() {
        let t = Tensor::from_values(vec![2], &[1.0f32, 2.0]).unwrap();
        assert!(matches!(
            t.to_values::<i32>(),
            Err(EngineError::InvalidArgument(_))
        ));
        let bad = Tensor {
            dims: vec![3],
            ty: ElementType::F32,
            data: vec![0; 8],
        };
        assert!(matches!(
            bad.to_values::<f32>(),
            Err(EngineError::InvalidArgument(_))
        ));
        assert!(Tensor::from_values(vec![3], &[1.0f32]).is_err());
        assert!(Tensor::new(vec![u32::MAX, u32::MAX, u32::MAX], ElementType::F64, vec![]).is_err());
    }

    #[test]
    fn native_copies_are_identity_on_little_endian() {
        let src = encode(&[1i32, -2, 3]);
        let mut dst = vec![0u8; src.len()];
        le_to_native(ElementType::I32, &src, &mut dst);
        assert_eq!(native_to_le(ElementType::I32, &dst), src);
    }
}
