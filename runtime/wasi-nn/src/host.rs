//! The wasi-nn host functions: what each import does with the guest's arguments.
//!
//! Resources live in the store's `ResourceTable`; this module keeps the per-instance counts of live
//! resources and tensor bytes so that a guest cannot grow host memory without bound. Bad arguments
//! become wasi-nn `error` resources; only a broken resource table or a blown per-instance limit in a
//! function that cannot return an error (the tensor constructor) traps the guest.

use std::fmt;
use std::sync::Arc;

use nimbus_engines::{ElementType, EngineError, EngineKind, Model, Target, Tensor};
use wasmtime::component::Resource;

use crate::WasiNnCtxView;
use crate::bindings::wasi::nn::errors as wit_errors;
use crate::bindings::wasi::nn::graph as wit_graph;
use crate::bindings::wasi::nn::inference as wit_inference;
use crate::bindings::wasi::nn::tensor as wit_tensor;

/// wasi-nn error codes, as the guest sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    InvalidEncoding,
    Timeout,
    RuntimeError,
    UnsupportedOperation,
    TooLarge,
    NotFound,
    Security,
    Unknown,
}

/// An error to hand back to the guest: a code and a message saying what went wrong.
#[derive(Clone, Debug)]
pub struct NnError {
    pub code: ErrorCode,
    pub message: String,
}

impl NnError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        NnError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for NnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for NnError {}

impl From<EngineError> for NnError {
    fn from(error: EngineError) -> Self {
        let code = match &error {
            EngineError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            EngineError::InvalidEncoding(_) => ErrorCode::InvalidEncoding,
            EngineError::Unsupported(_) => ErrorCode::UnsupportedOperation,
            EngineError::Unavailable(_) | EngineError::Runtime(_) => ErrorCode::RuntimeError,
        };
        NnError::new(code, error.to_string())
    }
}

/// A tensor the guest built or received from `compute`.
pub struct TensorResource(Tensor);

/// A loaded graph; the model is shared with every other instance using it.
pub struct GraphResource(Arc<dyn Model>);

/// An execution context on a graph.
pub struct ContextResource(Arc<dyn Model>);

/// An error resource.
pub struct ErrorResource(NnError);

fn to_element(ty: wit_tensor::TensorType) -> ElementType {
    use wit_tensor::TensorType as T;
    match ty {
        T::Fp16 => ElementType::F16,
        T::Fp32 => ElementType::F32,
        T::Fp64 => ElementType::F64,
        T::Bf16 => ElementType::Bf16,
        T::U8 => ElementType::U8,
        T::I32 => ElementType::I32,
        T::I64 => ElementType::I64,
    }
}

fn to_wit(ty: ElementType) -> wit_tensor::TensorType {
    use wit_tensor::TensorType as T;
    match ty {
        ElementType::F16 => T::Fp16,
        ElementType::F32 => T::Fp32,
        ElementType::F64 => T::Fp64,
        ElementType::Bf16 => T::Bf16,
        ElementType::U8 => T::U8,
        ElementType::I32 => T::I32,
        ElementType::I64 => T::I64,
    }
}

impl WasiNnCtxView<'_> {
    /// Counts a new resource against the instance's limit.
    fn reserve_resource(&mut self) -> wasmtime::Result<()> {
        if self.ctx.resources >= self.ctx.limits.max_resources {
            wasmtime::bail!(
                "wasi-nn: the guest holds too many resources (limit {})",
                self.ctx.limits.max_resources
            );
        }
        self.ctx.resources += 1;
        Ok(())
    }

    fn release_resource(&mut self) {
        self.ctx.resources = self.ctx.resources.saturating_sub(1);
    }

    /// Counts tensor bytes against the instance's limit; `false` when over it.
    fn reserve_tensor_bytes(&mut self, bytes: usize) -> bool {
        match self.ctx.tensor_bytes.checked_add(bytes) {
            Some(total) if total <= self.ctx.limits.max_tensor_bytes => {
                self.ctx.tensor_bytes = total;
                true
            }
            _ => false,
        }
    }

    fn release_tensor_bytes(&mut self, bytes: usize) {
        self.ctx.tensor_bytes = self.ctx.tensor_bytes.saturating_sub(bytes);
    }

    fn push_error(&mut self, error: NnError) -> wasmtime::Result<Resource<ErrorResource>> {
        tracing::debug!(code = ?error.code, message = %error.message, "wasi-nn error returned to guest");
        self.reserve_resource()?;
        Ok(self.table.push(ErrorResource(error))?)
    }

    fn push_tensor(&mut self, tensor: Tensor) -> wasmtime::Result<Resource<TensorResource>> {
        if !self.reserve_tensor_bytes(tensor.data.len()) {
            wasmtime::bail!(
                "wasi-nn: the guest holds more than {} bytes of tensors",
                self.ctx.limits.max_tensor_bytes
            );
        }
        self.reserve_resource()?;
        Ok(self.table.push(TensorResource(tensor))?)
    }

    fn push_graph(&mut self, model: Arc<dyn Model>) -> wasmtime::Result<Resource<GraphResource>> {
        self.reserve_resource()?;
        Ok(self.table.push(GraphResource(model))?)
    }

    async fn load_bytes(
        &mut self,
        parts: Vec<Vec<u8>>,
        encoding: wit_graph::GraphEncoding,
        target: wit_graph::ExecutionTarget,
    ) -> Result<Arc<dyn Model>, NnError> {
        use wit_graph::ExecutionTarget as X;
        use wit_graph::GraphEncoding as E;
        let target = match target {
            X::Cpu => Target::Cpu,
            X::Gpu => Target::Gpu,
            X::Tpu => {
                return Err(NnError::new(
                    ErrorCode::UnsupportedOperation,
                    "execution target tpu is not supported by this host (use cpu or gpu)",
                ));
            }
        };
        let engine = match encoding {
            E::Onnx | E::Autodetect => EngineKind::OnnxRuntime,
            other => {
                return Err(NnError::new(
                    ErrorCode::UnsupportedOperation,
                    format!(
                        "graph encoding {other:?} cannot be loaded from guest bytes; \
                         send ONNX, or bind the model to the function and use load-by-name"
                    ),
                ));
            }
        };
        let limit = self.ctx.limits.max_guest_model_bytes;
        if limit == 0 {
            return Err(NnError::new(
                ErrorCode::Security,
                "loading models from guest bytes is turned off on this host; use load-by-name",
            ));
        }
        let size = parts
            .iter()
            .map(Vec::len)
            .fold(0usize, usize::saturating_add);
        if size > limit {
            return Err(NnError::new(
                ErrorCode::TooLarge,
                format!("the model is {size} bytes; guests may load at most {limit}"),
            ));
        }
        if parts.len() != 1 {
            return Err(NnError::new(
                ErrorCode::InvalidArgument,
                format!("an ONNX graph is one builder, got {}", parts.len()),
            ));
        }
        self.ctx.provider.load_bytes(parts, engine, target).await
    }
}

impl wit_tensor::Host for WasiNnCtxView<'_> {}

impl wit_tensor::HostTensor for WasiNnCtxView<'_> {
    async fn new(
        &mut self,
        dimensions: Vec<u32>,
        ty: wit_tensor::TensorType,
        data: Vec<u8>,
    ) -> wasmtime::Result<Resource<TensorResource>> {
        // Shape and length are checked against each other and the model in `compute`, where an
        // error can be returned; here the tensor is only counted against the limits.
        self.push_tensor(Tensor {
            dims: dimensions,
            ty: to_element(ty),
            data,
        })
    }

    async fn dimensions(&mut self, tensor: Resource<TensorResource>) -> wasmtime::Result<Vec<u32>> {
        Ok(self.table.get(&tensor)?.0.dims.clone())
    }

    async fn ty(
        &mut self,
        tensor: Resource<TensorResource>,
    ) -> wasmtime::Result<wit_tensor::TensorType> {
        Ok(to_wit(self.table.get(&tensor)?.0.ty))
    }

    async fn data(&mut self, tensor: Resource<TensorResource>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&tensor)?.0.data.clone())
    }

    async fn drop(&mut self, tensor: Resource<TensorResource>) -> wasmtime::Result<()> {
        let TensorResource(tensor) = self.table.delete(tensor)?;
        self.release_tensor_bytes(tensor.data.len());
        self.release_resource();
        Ok(())
    }
}

impl wit_graph::Host for WasiNnCtxView<'_> {
    async fn load(
        &mut self,
        builder: Vec<Vec<u8>>,
        encoding: wit_graph::GraphEncoding,
        target: wit_graph::ExecutionTarget,
    ) -> wasmtime::Result<Result<Resource<GraphResource>, Resource<ErrorResource>>> {
        match self.load_bytes(builder, encoding, target).await {
            Ok(model) => Ok(Ok(self.push_graph(model)?)),
            Err(error) => Ok(Err(self.push_error(error)?)),
        }
    }

    async fn load_by_name(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<GraphResource>, Resource<ErrorResource>>> {
        let loaded = self.ctx.provider.load_by_name(&name).await;
        match loaded {
            Ok(model) => Ok(Ok(self.push_graph(model)?)),
            Err(error) => Ok(Err(self.push_error(error)?)),
        }
    }
}

impl wit_graph::HostGraph for WasiNnCtxView<'_> {
    async fn init_execution_context(
        &mut self,
        graph: Resource<GraphResource>,
    ) -> wasmtime::Result<Result<Resource<ContextResource>, Resource<ErrorResource>>> {
        let model = self.table.get(&graph)?.0.clone();
        self.reserve_resource()?;
        Ok(Ok(self.table.push(ContextResource(model))?))
    }

    async fn drop(&mut self, graph: Resource<GraphResource>) -> wasmtime::Result<()> {
        self.table.delete(graph)?;
        self.release_resource();
        Ok(())
    }
}

impl wit_inference::Host for WasiNnCtxView<'_> {}

impl wit_inference::HostGraphExecutionContext for WasiNnCtxView<'_> {
    async fn compute(
        &mut self,
        context: Resource<ContextResource>,
        inputs: Vec<(String, Resource<TensorResource>)>,
    ) -> wasmtime::Result<Result<Vec<(String, Resource<TensorResource>)>, Resource<ErrorResource>>>
    {
        let model = self.table.get(&context)?.0.clone();
        // The list passes ownership of each tensor to the host: take them out of the table.
        let mut tensors = Vec::with_capacity(inputs.len());
        for (name, handle) in inputs {
            let TensorResource(tensor) = self.table.delete(handle)?;
            self.release_tensor_bytes(tensor.data.len());
            self.release_resource();
            tensors.push((name, tensor));
        }
        let result = tokio::task::spawn_blocking(move || model.run(&tensors)).await;
        let outputs = match result {
            Ok(Ok(outputs)) => outputs,
            Ok(Err(error)) => return Ok(Err(self.push_error(error.into())?)),
            Err(join) => {
                let error = NnError::new(
                    ErrorCode::RuntimeError,
                    format!("inference failed inside the engine: {join}"),
                );
                return Ok(Err(self.push_error(error)?));
            }
        };
        let total = outputs
            .iter()
            .map(|(_, t)| t.data.len())
            .fold(0usize, usize::saturating_add);
        if self.ctx.tensor_bytes.saturating_add(total) > self.ctx.limits.max_tensor_bytes {
            let error = NnError::new(
                ErrorCode::TooLarge,
                format!(
                    "the outputs are {total} bytes; with the tensors already held that is over \
                     the {} bytes a guest may hold",
                    self.ctx.limits.max_tensor_bytes
                ),
            );
            return Ok(Err(self.push_error(error)?));
        }
        let mut handles = Vec::with_capacity(outputs.len());
        for (name, tensor) in outputs {
            handles.push((name, self.push_tensor(tensor)?));
        }
        Ok(Ok(handles))
    }

    async fn drop(&mut self, context: Resource<ContextResource>) -> wasmtime::Result<()> {
        self.table.delete(context)?;
        self.release_resource();
        Ok(())
    }
}

impl wit_errors::Host for WasiNnCtxView<'_> {}

impl wit_errors::HostError for WasiNnCtxView<'_> {
    async fn code(
        &mut self,
        error: Resource<ErrorResource>,
    ) -> wasmtime::Result<wit_errors::ErrorCode> {
        use wit_errors::ErrorCode as W;
        Ok(match self.table.get(&error)?.0.code {
            ErrorCode::InvalidArgument => W::InvalidArgument,
            ErrorCode::InvalidEncoding => W::InvalidEncoding,
            ErrorCode::Timeout => W::Timeout,
            ErrorCode::RuntimeError => W::RuntimeError,
            ErrorCode::UnsupportedOperation => W::UnsupportedOperation,
            ErrorCode::TooLarge => W::TooLarge,
            ErrorCode::NotFound => W::NotFound,
            ErrorCode::Security => W::Security,
            ErrorCode::Unknown => W::Unknown,
        })
    }

    async fn data(&mut self, error: Resource<ErrorResource>) -> wasmtime::Result<String> {
        Ok(self.table.get(&error)?.0.message.clone())
    }

    async fn drop(&mut self, error: Resource<ErrorResource>) -> wasmtime::Result<()> {
        self.table.delete(error)?;
        self.release_resource();
        Ok(())
    }
}
