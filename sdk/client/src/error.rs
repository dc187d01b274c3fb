//! Owns [`ClientError`]: every way a client call can fail, each rendered as one clear line.
//!
//! Messages are complete on their own (no `source()` chains to walk), so a CLI can print
//! `error: {err}` and be done.

use std::io;

/// An error from the Nimbus client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status; `code` and `message` come from its JSON error
    /// body (`{"error": {"code", "message"}}`), or are derived from the status when the body is not
    /// that shape.
    #[error("{message} (HTTP {status} {code})")]
    Http {
        status: u16,
        code: String,
        message: String,
    },
    /// No connection could be made to the server.
    #[error("cannot reach nimbusd at {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The connection was made but the exchange failed (reset, closed early, bad HTTP).
    #[error("{0}")]
    Transport(String),
    /// A local file could not be read (or another local I/O step failed).
    #[error("{context}: {error}")]
    Io { context: String, error: io::Error },
    /// The function manifest is missing, malformed or incomplete.
    #[error("{0}")]
    Manifest(String),
    /// The function's build command failed or did not produce the wasm file.
    #[error("{0}")]
    Build(String),
    /// An argument could not be turned into a request (bad URL, header, name).
    #[error("{0}")]
    InvalidInput(String),
    /// The server answered success but with a body this client does not understand.
    #[error("{0}")]
    Decode(String),
}

impl ClientError {
    /// An [`ClientError::Io`] with a context such as `cannot read model.onnx`.
    pub fn io(context: impl Into<String>, error: io::Error) -> Self {
        ClientError::Io {
            context: context.into(),
            error,
        }
    }

    /// The HTTP status when the server answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The API error code (`not_found`, `conflict`, ...) when the server answered with an error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Http { code, .. } => Some(code),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line() {
        let e = ClientError::Http {
            status: 404,
            code: "not_found".into(),
            message: "no function named `x`".into(),
        };
        assert_eq!(e.to_string(), "no function named `x` (HTTP 404 not_found)");
        assert_eq!(e.status(), Some(404));
        assert_eq!(e.code(), Some("not_found"));
        let e = ClientError::Connect {
            url: "http://127.0.0.1:8080".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(
            e.to_string(),
            "cannot reach nimbusd at http://127.0.0.1:8080: connection refused"
        );
        let e = ClientError::io(
            "cannot read m.onnx",
            io::Error::new(io::ErrorKind::NotFound, "gone"),
        );
        assert_eq!(e.to_string(), "cannot read m.onnx: gone");
        assert!(std::error::Error::source(&e).is_none());
    }
}
