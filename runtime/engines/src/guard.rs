//! Panic containment around calls into the binding crates.
//!
//! `ort` and `openvino` are thin layers over C APIs and still `expect`/`assert` in places
//! (null pointers, non-UTF-8 strings, unexpected status codes). Nimbus must never take the
//! process down for one model or one request, so every call that reaches native code goes through
//! [`native`], which turns a panic into [`EngineError::Runtime`]. The checks done before native
//! code (see `validate`) mean this is a last line of defence, not the normal error path.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::EngineError;

/// Runs `f`, turning a panic into `EngineError::Runtime("<what>: ... panicked: <message>")`.
pub(crate) fn native<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, EngineError>,
) -> Result<T, EngineError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic_message(&panic);
            tracing::error!(%what, %message, "engine binding panicked; contained");
            Err(EngineError::Runtime(format!(
                "{what}: the engine binding panicked: {message}"
            )))
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(panic: &Box<dyn Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}
