//! The blob store's S3 backend: blobs at `<prefix>sha256/<hex>` in one bucket of any
//! S3-compatible service, plus reads of objects registered by `s3://bucket/key`. This file owns the
//! store handle, keys, probes and the mapping of SDK failures to [`RegistryError`]; uploads are in
//! `upload`, verified downloads in `download`, configuration in `config`.

mod config;
mod download;
mod upload;

use std::sync::Arc;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

pub use config::{ChecksumMode, S3Config, S3Credentials};
pub(super) use download::download;
pub(super) use upload::put_stream;

use super::S3Uri;
use crate::RegistryError;

/// A bucket holding content-addressed blobs. Cheap to clone.
#[derive(Clone)]
pub(super) struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Empty or ending in `/`.
    prefix: String,
    /// Where requests go, for messages: the endpoint URL or "AWS".
    endpoint: String,
    config: S3Config,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.inner.bucket)
            .field("prefix", &self.inner.prefix)
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// A store on `config`; contacts nothing (see [`S3Store::ping`]).
    pub(super) async fn open(config: S3Config) -> Result<S3Store, RegistryError> {
        if !S3Uri::is_bucket_name(&config.bucket) {
            return Err(RegistryError::BadRequest(format!(
                "invalid S3 bucket name `{}`",
                config.bucket
            )));
        }
        let client = config.client().await;
        Ok(S3Store {
            inner: Arc::new(Inner {
                client,
                bucket: config.bucket.clone(),
                prefix: config.key_prefix(),
                endpoint: config.endpoint.clone().unwrap_or_else(|| "AWS".to_owned()),
                config,
            }),
        })
    }

    pub(super) fn client(&self) -> &aws_sdk_s3::Client {
        &self.inner.client
    }

    pub(super) fn config(&self) -> &S3Config {
        &self.inner.config
    }

    /// `s3://bucket/prefix` and the endpoint, for logs and messages.
    pub(super) fn describe(&self) -> String {
        format!(
            "s3://{}/{} at {}",
            self.inner.bucket, self.inner.prefix, self.inner.endpoint
        )
    }

    /// Where the blob with this (validated) digest lives.
    pub(super) fn blob_uri(&self, sha256: &str) -> S3Uri {
        S3Uri {
            bucket: self.inner.bucket.clone(),
            key: format!("{}sha256/{sha256}", self.inner.prefix),
        }
    }

    /// A key for an upload whose digest is not known yet.
    pub(super) fn staging_uri(&self, id: &str) -> S3Uri {
        S3Uri {
            bucket: self.inner.bucket.clone(),
            key: format!("{}uploads/{id}", self.inner.prefix),
        }
    }

    /// Whether the bucket answers to these credentials (for startup and /readyz).
    pub(super) async fn ping(&self) -> Result<(), RegistryError> {
        let bucket = &self.inner.bucket;
        match self.client().head_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(error) => Err(
                match self.classify(error, &format!("checking bucket `{bucket}`")) {
                    RegistryError::NotFound(_) => RegistryError::Unavailable(format!(
                        "S3 bucket `{bucket}` does not exist at {}",
                        self.inner.endpoint
                    )),
                    other => other,
                },
            ),
        }
    }

    /// The size of an object; `None` when there is none at `uri`.
    pub(super) async fn object_size(&self, uri: &S3Uri) -> Result<Option<u64>, RegistryError> {
        let answer = self
            .client()
            .head_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .send()
            .await;
        match answer {
            Ok(head) => Ok(Some(head.content_length().unwrap_or(0).max(0) as u64)),
            Err(error) => match self.classify(error, &format!("looking up {uri}")) {
                RegistryError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Removes an object, logging instead of failing (clean-up paths).
    pub(super) async fn delete_quietly(&self, uri: &S3Uri) {
        let result = self
            .client()
            .delete_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .send()
            .await;
        if let Err(error) = result {
            tracing::warn!(object = %uri, error = %DisplayErrorContext(&error), "cannot remove an object");
        }
    }

    /// The registry error for a failed S3 call made while `doing` something: storage that cannot
    /// be reached, times out, fails (5xx) or refuses the credentials is `Unavailable`; a missing
    /// bucket or object `NotFound`; anything else `Internal`. Messages name the call and the
    /// service's code.
    pub(super) fn classify<E>(
        &self,
        error: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
        doing: &str,
    ) -> RegistryError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let endpoint = &self.inner.endpoint;
        let timed_out = match &error {
            SdkError::TimeoutError(_) => true,
            SdkError::DispatchFailure(failure) => failure.is_timeout(),
            _ => false,
        };
        if timed_out {
            return RegistryError::Unavailable(format!(
                "S3 at {endpoint} did not answer within {} ms while {doing}",
                self.inner.config.timeout.as_millis()
            ));
        }
        match &error {
            SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
                RegistryError::Unavailable(format!(
                    "cannot reach S3 at {endpoint} while {doing}: {}",
                    DisplayErrorContext(&error)
                ))
            }
            SdkError::ConstructionFailure(_) => RegistryError::Unavailable(format!(
                "cannot make an S3 request while {doing} (are credentials configured?): {}",
                DisplayErrorContext(&error)
            )),
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                let code = service.err().code().unwrap_or("");
                let message = service.err().message().unwrap_or("");
                let detail = [code, message]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(": ");
                let detail = if detail.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}, {detail}")
                };
                match status {
                    404 => RegistryError::NotFound(format!("{doing}: not found ({detail})")),
                    401 | 403 => RegistryError::Unavailable(format!(
                        "S3 at {endpoint} refused access while {doing} ({detail}): check the \
                         credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, or \
                         --s3-access-key-id / --s3-secret-access-key) and the bucket's policy"
                    )),
                    429 | 500.. => RegistryError::Unavailable(format!(
                        "S3 at {endpoint} failed while {doing} ({detail})"
                    )),
                    _ => RegistryError::internal(format!(
                        "S3 at {endpoint} refused {doing} ({detail})"
                    )),
                }
            }
            _ => RegistryError::internal(format!(
                "S3 call failed while {doing}: {}",
                DisplayErrorContext(&error)
            )),
        }
    }
}
