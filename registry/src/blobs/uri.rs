//! `s3://bucket/key` references to objects that someone put in S3-compatible storage with any
//! tool: parsing and the rules a reference must follow before it reaches a request.

use std::fmt;
use std::str::FromStr;

use crate::RegistryError;
use crate::validate::shorten;

/// Longest object key S3 accepts, in bytes.
const MAX_KEY_BYTES: usize = 1024;

/// An object in S3-compatible storage: `s3://<bucket>/<key>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Uri {
    pub bucket: String,
    pub key: String,
}

impl S3Uri {
    /// Whether `bucket` follows S3's bucket naming rules (3-63 characters of lowercase letters,
    /// digits, dots and hyphens, starting and ending with a letter or digit).
    pub fn is_bucket_name(bucket: &str) -> bool {
        let bytes = bucket.as_bytes();
        (3..=63).contains(&bytes.len())
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-'))
    }
}

impl FromStr for S3Uri {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<S3Uri, RegistryError> {
        let invalid = |why: &str| {
            RegistryError::BadRequest(format!(
                "invalid object URI `{}`: {why} (expected s3://bucket/key)",
                shorten(s)
            ))
        };
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("only s3:// URIs are supported"))?;
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| invalid("there is no key after the bucket"))?;
        if !S3Uri::is_bucket_name(bucket) {
            return Err(invalid("the bucket name breaks S3's naming rules"));
        }
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(invalid("the key must have 1 to 1024 bytes"));
        }
        if key.chars().any(char::is_control) {
            return Err(invalid("the key has control characters"));
        }
        Ok(S3Uri {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }
}

impl fmt::Display for S3Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let uri: S3Uri = "s3://models/effnet/lite0.onnx".parse().unwrap();
        assert_eq!(uri.bucket, "models");
        assert_eq!(uri.key, "effnet/lite0.onnx");
        assert_eq!(uri.to_string(), "s3://models/effnet/lite0.onnx");
    }

    #[test]
    fn refuses_what_is_not_an_object() {
        for bad in [
            "models/effnet.onnx",
            "https://models/effnet.onnx",
            "s3://models",
            "s3://models/",
            "s3://Models/x",
            "s3://m/x",
            "s3://-models/x",
            "s3://models/a\nb",
        ] {
            let err = bad.parse::<S3Uri>().unwrap_err();
            assert!(matches!(err, RegistryError::BadRequest(_)), "{bad}: {err}");
        }
        let long = format!("s3://models/{}", "k".repeat(1025));
        assert!(long.parse::<S3Uri>().is_err());
    }
}
