//! Owns URL path building: percent-escaping of names placed in path segments and the shape of
//! the invoke path `/fn/{tenant}/{function}[@{version}][/{path...}][?query]`.
//!
//! Names are escaped so that they stay one segment (a `/` in a name becomes `%2F`); `@` is kept
//! literal because the server splits `name@version` on it. A caller-supplied invoke path is passed
//! through as written (including any `%` escapes and the query), only bytes that may not appear in a
//! URI at all are escaped.

use std::fmt::Write;

/// Escapes `value` for use as a single path segment: unreserved characters and `@` stay, every
/// other byte becomes `%XX`.
pub(crate) fn segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(b as char);
        } else {
            push_escaped(&mut out, b);
        }
    }
    out
}

/// Escapes only what cannot appear in a URI's path and query (controls, space, non-ASCII,
/// `"<>\^`{|}` and `#`, which would start a fragment); keeps `/`, `?`, `&`, `=` and `%`.
fn loose(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        let bad = b <= b' '
            || b >= 0x7f
            || matches!(
                b,
                b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' | b'#'
            );
        if bad {
            push_escaped(&mut out, b);
        } else {
            out.push(b as char);
        }
    }
    out
}

fn push_escaped(out: &mut String, b: u8) {
    // Writing to a String cannot fail.
    let _ = write!(out, "%{b:02X}");
}

/// The path and query for invoking `function` (which may be `name@version` or `name@alias`) of
/// `tenant`, with the guest-visible `path` (which may carry a `?query`) appended. An empty path or
/// `/` adds nothing: the guest then sees `/`.
pub(crate) fn invoke_path(tenant: &str, function: &str, path: &str) -> String {
    let tail = if path.is_empty() || path == "/" {
        String::new()
    } else if path.starts_with('?') {
        path.to_string()
    } else if let Some(query) = path.strip_prefix("/?") {
        format!("?{query}")
    } else if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    format!(
        "/fn/{}/{}{}",
        segment(tenant),
        segment(function),
        loose(&tail)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_keep_at_and_escape_the_rest() {
        assert_eq!(segment("classify-image"), "classify-image");
        assert_eq!(segment("classify@3f2a9c1b7d20"), "classify@3f2a9c1b7d20");
        assert_eq!(segment("classify@latest"), "classify@latest");
        assert_eq!(segment("a/b"), "a%2Fb");
        assert_eq!(segment("a b?c#d%"), "a%20b%3Fc%23d%25");
        assert_eq!(segment("é"), "%C3%A9");
    }

    #[test]
    fn invoke_paths() {
        assert_eq!(invoke_path("default", "hello", ""), "/fn/default/hello");
        assert_eq!(invoke_path("default", "hello", "/"), "/fn/default/hello");
        assert_eq!(
            invoke_path("default", "hello@abc123", "/predict"),
            "/fn/default/hello@abc123/predict"
        );
        assert_eq!(
            invoke_path("t1", "hello@prod", "predict/v2?top=5&x=a%20b"),
            "/fn/t1/hello@prod/predict/v2?top=5&x=a%20b"
        );
        assert_eq!(invoke_path("t1", "hello", "/?q=1"), "/fn/t1/hello?q=1");
        assert_eq!(invoke_path("t1", "hello", "?q=1"), "/fn/t1/hello?q=1");
        assert_eq!(
            invoke_path("my tenant", "a/b@v", "/x y#z"),
            "/fn/my%20tenant/a%2Fb@v/x%20y%23z"
        );
    }
}
