//! The checks every engine runs on caller input before native code sees it.
//!
//! Everything a guest controls — names, element types, shapes, byte lengths — is checked here in
//! plain Rust with checked arithmetic, so that a wrong tensor is an [`EngineError::InvalidArgument`]
//! naming the input and what was expected, never a native crash, an overflow or a huge allocation.

use crate::{ElementType, EngineError, Tensor, TensorInfo};

/// The byte length of a `ty` tensor of shape `dims`: `product(dims) * ty.size()`, or
/// [`EngineError::InvalidArgument`] when that does not fit in `usize`.
pub fn byte_len(dims: &[u32], ty: ElementType) -> Result<usize, EngineError> {
    dims.iter()
        .try_fold(ty.size(), |acc, &d| acc.checked_mul(d as usize))
        .ok_or_else(|| {
            EngineError::InvalidArgument(format!(
                "a {ty} tensor of shape {dims:?} is too large: its byte size overflows"
            ))
        })
}

/// `[?, 3, 224, 224]`.
pub(crate) fn format_dims(dims: &[Option<u64>]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| d.map_or_else(|| "?".to_string(), |d| d.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

fn describe(info: &TensorInfo) -> String {
    let ty = info.ty.map_or("an unsupported type", ElementType::as_str);
    format!("`{}` ({ty} {})", info.name, format_dims(&info.dims))
}

fn describe_all(infos: &[TensorInfo]) -> String {
    if infos.is_empty() {
        return "none".to_string();
    }
    infos.iter().map(describe).collect::<Vec<_>>().join(", ")
}

/// Checks `inputs` against what the model declares: every name known and given once, every model
/// input present, element types equal, byte lengths equal to `product(dims) * size` (checked
/// arithmetic), ranks equal and static dimensions matching.
pub fn validate_inputs(
    model_inputs: &[TensorInfo],
    inputs: &[(String, Tensor)],
) -> Result<(), EngineError> {
    for (index, (name, _)) in inputs.iter().enumerate() {
        if !model_inputs.iter().any(|info| &info.name == name) {
            return Err(EngineError::InvalidArgument(format!(
                "unknown input `{}`; the model's inputs are {}",
                name.escape_debug(),
                describe_all(model_inputs)
            )));
        }
        if inputs[..index].iter().any(|(earlier, _)| earlier == name) {
            return Err(EngineError::InvalidArgument(format!(
                "input `{name}` is given more than once"
            )));
        }
    }
    let missing: Vec<&TensorInfo> = model_inputs
        .iter()
        .filter(|info| !inputs.iter().any(|(name, _)| name == &info.name))
        .collect();
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|i| format!("`{}`", i.name)).collect();
        return Err(EngineError::InvalidArgument(format!(
            "missing input {}; the model's inputs are {}",
            names.join(", "),
            describe_all(model_inputs)
        )));
    }
    for (name, tensor) in inputs {
        if let Some(info) = model_inputs.iter().find(|info| &info.name == name) {
            validate_tensor(info, tensor)?;
        }
    }
    Ok(())
}

fn validate_tensor(info: &TensorInfo, tensor: &Tensor) -> Result<(), EngineError> {
    let name = &info.name;
    let ty = match info.ty {
        Some(ty) => ty,
        None => {
            return Err(EngineError::Unsupported(format!(
                "input `{name}` has an element type nimbus tensors cannot carry"
            )));
        }
    };
    if tensor.ty != ty {
        return Err(EngineError::InvalidArgument(format!(
            "input `{name}` expects {ty}, got {}",
            tensor.ty
        )));
    }
    let len = tensor.data.len();
    if !len.is_multiple_of(ty.size()) {
        return Err(EngineError::InvalidArgument(format!(
            "input `{name}`: {len} bytes is not a whole number of {ty} elements ({} bytes each)",
            ty.size()
        )));
    }
    let expected = byte_len(&tensor.dims, ty).map_err(|_| {
        EngineError::InvalidArgument(format!(
            "input `{name}`: shape {:?} is too large: its byte size overflows",
            tensor.dims
        ))
    })?;
    if len != expected {
        return Err(EngineError::InvalidArgument(format!(
            "input `{name}`: a {ty} tensor of shape {:?} needs {expected} bytes, got {len}",
            tensor.dims
        )));
    }
    if tensor.dims.len() != info.dims.len() {
        return Err(EngineError::InvalidArgument(format!(
            "input `{name}` expects rank {} (shape {}), got rank {} (shape {:?})",
            info.dims.len(),
            format_dims(&info.dims),
            tensor.dims.len(),
            tensor.dims
        )));
    }
    for (axis, (want, &got)) in info.dims.iter().zip(&tensor.dims).enumerate() {
        if let Some(want) = *want
            && want != u64::from(got)
        {
            return Err(EngineError::InvalidArgument(format!(
                "input `{name}` dimension {axis} must be {want} (shape {}), got {got} (shape {:?})",
                format_dims(&info.dims),
                tensor.dims
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixels() -> Vec<TensorInfo> {
        vec![TensorInfo {
            name: "pixels".into(),
            ty: Some(ElementType::F32),
            dims: vec![None, Some(64)],
        }]
    }

    fn f32_tensor(dims: Vec<u32>, bytes: usize) -> Tensor {
        Tensor {
            dims,
            ty: ElementType::F32,
            data: vec![0; bytes],
        }
    }

    fn invalid(result: Result<(), EngineError>) -> String {
        match result {
            Err(EngineError::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn accepts_a_matching_tensor_with_any_dynamic_size() {
        for n in [0u32, 1, 7] {
            let t = f32_tensor(vec![n, 64], n as usize * 256);
            validate_inputs(&pixels(), &[("pixels".into(), t)]).unwrap();
        }
    }

    #[test]
    fn rejects_bad_inputs_with_clear_messages() {
        let m = invalid(validate_inputs(
            &pixels(),
            &[("pixels".into(), f32_tensor(vec![1, 64], 255))],
        ));
        assert!(m.contains("not a whole number"), "{m}");
        let m = invalid(validate_inputs(
            &pixels(),
            &[("pixels".into(), f32_tensor(vec![1, 64], 252))],
        ));
        assert!(m.contains("needs 256 bytes, got 252"), "{m}");
        let m = invalid(validate_inputs(
            &pixels(),
            &[(
                "pixels".into(),
                f32_tensor(vec![u32::MAX, u32::MAX, u32::MAX], 4),
            )],
        ));
        assert!(m.contains("overflows"), "{m}");
        let m = invalid(validate_inputs(
            &pixels(),
            &[("pixels".into(), f32_tensor(vec![64], 256))],
        ));
        assert!(m.contains("rank 2"), "{m}");
        let m = invalid(validate_inputs(
            &pixels(),
            &[("pixels".into(), f32_tensor(vec![2, 32], 256))],
        ));
        assert!(m.contains("dimension 1 must be 64"), "{m}");
        let wrong_type = Tensor {
            dims: vec![1, 64],
            ty: ElementType::I64,
            data: vec![0; 512],
        };
        let m = invalid(validate_inputs(&pixels(), &[("pixels".into(), wrong_type)]));
        assert_eq!(m, "input `pixels` expects fp32, got i64");
        let m = invalid(validate_inputs(
            &pixels(),
            &[("image".into(), f32_tensor(vec![1, 64], 256))],
        ));
        assert!(
            m.contains("unknown input `image`") && m.contains("`pixels` (fp32 [?, 64])"),
            "{m}"
        );
        let m = invalid(validate_inputs(&pixels(), &[]));
        assert!(m.contains("missing input `pixels`"), "{m}");
        let t = f32_tensor(vec![1, 64], 256);
        let m = invalid(validate_inputs(
            &pixels(),
            &[("pixels".into(), t.clone()), ("pixels".into(), t)],
        ));
        assert!(m.contains("more than once"), "{m}");
    }

    #[test]
    fn an_input_of_an_unrepresentable_type_is_unsupported() {
        let info = vec![TensorInfo {
            name: "mask".into(),
            ty: None,
            dims: vec![Some(1)],
        }];
        let t = Tensor {
            dims: vec![1],
            ty: ElementType::U8,
            data: vec![1],
        };
        assert!(matches!(
            validate_inputs(&info, &[("mask".into(), t)]),
            Err(EngineError::Unsupported(_))
        ));
    }

    #[test]
    fn byte_len_is_checked() {
        assert_eq!(byte_len(&[2, 3], ElementType::F64).unwrap(), 48);
        assert_eq!(byte_len(&[], ElementType::U8).unwrap(), 1);
        assert!(byte_len(&[u32::MAX, u32::MAX, 2], ElementType::U8).is_err());
    }
}
