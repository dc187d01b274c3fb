//! How nimbusd reaches its S3-compatible storage: [`S3Config`] (bucket, prefix, endpoint, region,
//! credentials, addressing style, checksums, time limits and retries) and the SDK client built
//! from it. Nothing here talks to S3.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use aws_config::environment::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};

/// The region used when neither the configuration nor the AWS environment names one (S3-compatible
/// servers usually ignore it, but requests must be signed for some region).
pub const DEFAULT_REGION: &str = "us-east-1";
/// First pause before a retry; it doubles (with jitter) up to [`MAX_BACKOFF`].
pub(super) const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Where the S3 credentials come from.
#[derive(Clone, Default)]
pub enum S3Credentials {
    /// The standard chain: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, then the
    /// shared config and credentials files (the named profile, else AWS_PROFILE or `default`),
    /// web identity, then the container and instance metadata services.
    #[default]
    Environment,
    /// A named profile of the shared config and credentials files.
    Profile(String),
    /// Keys given to nimbusd directly.
    Static {
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    },
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            S3Credentials::Environment => f.write_str("Environment"),
            S3Credentials::Profile(name) => f.debug_tuple("Profile").field(name).finish(),
            // Never the secret.
            S3Credentials::Static { access_key_id, .. } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .finish_non_exhaustive(),
        }
    }
}

/// When uploads carry CRC checksums for S3 to check. Downloads are checked by their sha256
/// end to end, so the SDK's own response checksums are never asked for (they cannot cover objects
/// uploaded in parts anyway).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChecksumMode {
    /// On every upload (the AWS SDK default): each part carries a CRC32 that S3 checks.
    #[default]
    WhenSupported,
    /// Only where the operation requires one: for S3-compatible servers that reject the newer
    /// checksum headers. Blobs are still verified end to end by their sha256.
    WhenRequired,
}

impl ChecksumMode {
    /// The names the command line uses.
    pub const NAMES: [&str; 2] = ["when-supported", "when-required"];
}

impl FromStr for ChecksumMode {
    type Err = String;

    fn from_str(s: &str) -> Result<ChecksumMode, String> {
        match s {
            "when-supported" => Ok(ChecksumMode::WhenSupported),
            "when-required" => Ok(ChecksumMode::WhenRequired),
            other => Err(format!(
                "unknown checksum mode `{other}`: use when-supported or when-required"
            )),
        }
    }
}

/// Everything needed to keep blobs in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// The bucket blobs are stored in: `<prefix>sha256/<hex>`.
    pub bucket: String,
    /// Prepended to every key nimbusd writes; a `/` is added when it does not end in one.
    pub prefix: String,
    /// The service URL (`http://127.0.0.1:8333` for a local SeaweedFS or MinIO); `None` is AWS.
    pub endpoint: Option<String>,
    /// `None`: AWS_REGION / the profile's region, else [`DEFAULT_REGION`].
    pub region: Option<String>,
    /// `http://host/bucket/key` instead of `http://bucket.host/key` (most S3-compatible servers
    /// need this).
    pub path_style: bool,
    pub credentials: S3Credentials,
    pub checksums: ChecksumMode,
    /// Limit for connecting, for the first byte of each answer, and for any pause in a body
    /// being sent or received.
    pub timeout: Duration,
    /// Tries per call, the first included; failures that may pass (timeouts, refused
    /// connections, 5xx, throttling) are retried with exponential backoff.
    pub max_attempts: u32,
}

impl S3Config {
    /// A configuration for `bucket` with the defaults: AWS endpoint, environment credentials, a
    /// 10 s time limit and 3 attempts.
    pub fn new(bucket: impl Into<String>) -> S3Config {
        S3Config {
            bucket: bucket.into(),
            prefix: String::new(),
            endpoint: None,
            region: None,
            path_style: false,
            credentials: S3Credentials::default(),
            checksums: ChecksumMode::default(),
            timeout: Duration::from_secs(10),
            max_attempts: 3,
        }
    }

    /// The prefix as keys use it: empty, or ending in `/`.
    pub(super) fn key_prefix(&self) -> String {
        match self.prefix.trim_start_matches('/') {
            "" => String::new(),
            p if p.ends_with('/') => p.to_owned(),
            p => format!("{p}/"),
        }
    }

    /// The SDK client. Loads credentials lazily: a missing or wrong key shows at the first call
    /// (nimbusd makes one at startup, and /readyz makes one each time).
    pub(super) async fn client(&self) -> aws_sdk_s3::Client {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(self.timeout)
                    .read_timeout(self.timeout)
                    .build(),
            )
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(self.max_attempts.max(1))
                    .with_initial_backoff(INITIAL_BACKOFF)
                    .with_max_backoff(MAX_BACKOFF),
            )
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(self.timeout)
                    .build(),
            );
        loader = match &self.region {
            Some(region) => loader.region(Region::new(region.clone())),
            // AWS_REGION, then the profile, then the default; never the instance metadata
            // service, whose probes stall startup wherever there is none.
            None => {
                let mut profile = aws_config::profile::region::ProfileFileRegionProvider::builder();
                if let S3Credentials::Profile(name) = &self.credentials {
                    profile = profile.profile_name(name.clone());
                }
                loader.region(
                    RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
                        .or_else(profile.build())
                        .or_else(Region::new(DEFAULT_REGION)),
                )
            }
        };
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        loader = match &self.credentials {
            S3Credentials::Environment => loader,
            S3Credentials::Profile(name) => loader.profile_name(name.clone()),
            S3Credentials::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => loader.credentials_provider(Credentials::new(
                access_key_id.clone(),
                secret_access_key.clone(),
                session_token.clone(),
                None,
                "nimbusd-config",
            )),
        };
        let shared = loader.load().await;
        let builder = aws_sdk_s3::config::Builder::from(&shared).force_path_style(self.path_style);
        let builder = builder
            .request_checksum_calculation(match self.checksums {
                ChecksumMode::WhenSupported => RequestChecksumCalculation::WhenSupported,
                ChecksumMode::WhenRequired => RequestChecksumCalculation::WhenRequired,
            })
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        aws_sdk_s3::Client::from_conf(builder.build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_end_in_a_slash() {
        let mut config = S3Config::new("b");
        assert_eq!(config.key_prefix(), "");
        config.prefix = "nimbus".into();
        assert_eq!(config.key_prefix(), "nimbus/");
        config.prefix = "/a/b/".into();
        assert_eq!(config.key_prefix(), "a/b/");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let credentials = S3Credentials::Static {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI".into(),
            session_token: None,
        };
        let shown = format!("{credentials:?}");
        assert!(
            shown.contains("AKIDEXAMPLE") && !shown.contains("wJalrXUtnFEMI"),
            "{shown}"
        );
    }

    #[test]
    fn checksum_modes_parse() {
        for name in ChecksumMode::NAMES {
            assert!(name.parse::<ChecksumMode>().is_ok());
        }
        assert!("always".parse::<ChecksumMode>().is_err());
    }
}
