//! Host side of `wasi:nn` (the WIT interface `wasi:nn@0.2.0-rc-2024-10-28`) for Nimbus guests.
//!
//! This crate owns the guest-facing half of inference: the tensor, graph, execution-context and
//! error resources a guest holds, the checks on everything a guest passes in, and the mapping of
//! engine errors to wasi-nn errors. It never panics on guest input: every bad argument comes back as
//! a wasi-nn `error` resource with a code and a message.
//!
//! Which models a guest may see is not decided here: the embedder hands each store a
//! [`GraphProvider`] that resolves `load-by-name` (in Nimbus, only the models bound to the function by
//! its manifest) and loads guest-supplied bytes (size-capped, cached by digest). Graphs are shared
//! `Arc<dyn Model>`s, so a model loaded once serves every instance.
//!
//! Embed it the way wasmtime's WASI crates are embedded: implement [`WasiNnView`] for the store's
//! data and call [`add_to_linker`].

mod host;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use nimbus_engines::{EngineKind, Model, Target};
use wasmtime::component::{HasData, Linker, ResourceTable};

pub use host::{ContextResource, ErrorResource, GraphResource, TensorResource};
pub use host::{ErrorCode, NnError};

/// Bindings generated from `wit/wasi-nn.wit`; the four resources map to this crate's host types.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "ml",
        imports: { default: async | trappable },
        with: {
            "wasi:nn/tensor.tensor": crate::host::TensorResource,
            "wasi:nn/graph.graph": crate::host::GraphResource,
            "wasi:nn/inference.graph-execution-context": crate::host::ContextResource,
            "wasi:nn/errors.error": crate::host::ErrorResource,
        },
    });
}

/// A boxed future, as the provider returns them (the trait must be object safe).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Where graphs come from. The embedder decides what a name means and how loads are cached.
pub trait GraphProvider: Send + Sync {
    /// Resolves `load-by-name`. Unknown names must answer [`ErrorCode::NotFound`].
    fn load_by_name(&self, name: &str) -> BoxFuture<Result<Arc<dyn Model>, NnError>>;

    /// Loads a graph from bytes the guest passed to `load`. The target has already been checked
    /// against what this host supports (never `tpu`).
    fn load_bytes(
        &self,
        parts: Vec<Vec<u8>>,
        engine: EngineKind,
        target: Target,
    ) -> BoxFuture<Result<Arc<dyn Model>, NnError>>;
}

/// Per-instance limits on what a guest may hold in host memory through wasi-nn.
#[derive(Clone, Copy, Debug)]
pub struct NnLimits {
    /// Bytes of tensor data held by the host for one instance (inputs and outputs together).
    pub max_tensor_bytes: usize,
    /// Live wasi-nn resources (tensors, graphs, contexts, errors) of one instance.
    pub max_resources: usize,
    /// Bytes a guest may pass to `load`; 0 turns guest-supplied models off.
    pub max_guest_model_bytes: usize,
}

impl Default for NnLimits {
    fn default() -> Self {
        NnLimits {
            max_tensor_bytes: 256 << 20,
            max_resources: 4096,
            max_guest_model_bytes: 64 << 20,
        }
    }
}

/// The wasi-nn state of one store (one request's instance).
pub struct WasiNnCtx {
    provider: Arc<dyn GraphProvider>,
    limits: NnLimits,
    tensor_bytes: usize,
    resources: usize,
}

impl WasiNnCtx {
    /// A context whose graphs come from `provider`.
    pub fn new(provider: Arc<dyn GraphProvider>, limits: NnLimits) -> Self {
        WasiNnCtx {
            provider,
            limits,
            tensor_bytes: 0,
            resources: 0,
        }
    }
}

/// What the wasi-nn host functions borrow from the store's data.
pub struct WasiNnCtxView<'a> {
    /// This crate's per-store state.
    pub ctx: &'a mut WasiNnCtx,
    /// The store's resource table (shared with the other WASI interfaces).
    pub table: &'a mut ResourceTable,
}

/// Implemented by the store's data type to hand out a [`WasiNnCtxView`].
pub trait WasiNnView: Send {
    /// Borrows the wasi-nn state and the resource table.
    fn nn(&mut self) -> WasiNnCtxView<'_>;
}

struct WasiNn;

impl HasData for WasiNn {
    type Data<'a> = WasiNnCtxView<'a>;
}

/// Adds the four wasi-nn interfaces to `linker`.
pub fn add_to_linker<T: WasiNnView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    bindings::Ml::add_to_linker::<T, WasiNn>(linker, T::nn)
}
