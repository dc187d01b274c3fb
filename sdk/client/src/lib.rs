//! Nimbus client SDK: a Rust client for the nimbusd HTTP API described in `docs/api.md`.
//!
//! The crate knows only the HTTP API. It owns:
//! - [`Client`] (module `client`): one async method per API call (blobs, models, functions,
//!   tenants, keys, invoke, raw `GET`),
//! - [`Manifest`] (module `manifest`): the `nimbus.toml` function manifest,
//! - [`build_function`] (module `builder`): running a manifest's build command and locating the
//!   wasm it produces,
//! - the response types (module `types`) and [`ClientError`] (module `error`).
//!
//! The wire itself (connection pool, base URL, streamed bodies) is private to module `transport`,
//! so TLS can be added there without touching the rest.
//!
//! ```no_run
//! # async fn demo() -> Result<(), nimbus_client::ClientError> {
//! use nimbus_client::{Client, Manifest, build_function};
//! let client = Client::new("http://127.0.0.1:8080", Some("nmb_id_secret".into()))?;
//! let (manifest, dir) = Manifest::load("functions/classify-image".as_ref())?;
//! let wasm = build_function(&manifest, &dir)?;
//! let version = client.deploy(&manifest, &wasm).await?;
//! let me = client.whoami().await?;
//! let out = client
//!     .invoke(&me.tenant, &version.name, "/", nimbus_client::http::Method::POST, b"hi".to_vec(), &[])
//!     .await?;
//! println!("{} {:?}", out.status, out.body);
//! # Ok(()) }
//! ```

mod builder;
mod client;
mod error;
mod manifest;
mod paths;
mod transport;
mod types;

pub use builder::{build_function, find_repo_root};
pub use client::Client;
pub use error::ClientError;
pub use manifest::{Limits, MANIFEST_FILE, Manifest};
pub use types::{
    AliasMoved, BlobRef, CreatedKey, CreatedTenant, FunctionVersion, InvokeResponse, KeyInfo,
    ModelBinding, ModelVersion, Tenant, VersionDeleted, Whoami,
};

/// Re-exported so callers name the same `http` and `bytes` types the client uses.
pub use bytes;
pub use http;
