//! Object stores: local files, and S3 (or any S3-compatible store) found on
//! first use.
//!
//! [`ClipObjectStoreRegistry`] wraps DataFusion's default registry. A URL
//! whose store is not registered yet, such as `s3://bucket/photos/` in
//! `read_images(...)`, `CREATE EXTERNAL TABLE ... LOCATION` or
//! `COPY ... TO`, gets an `AmazonS3` store for its bucket built from the
//! environment:
//!
//! 1. the standard AWS variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!    `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`,
//!    ...);
//! 2. the AWS shared config files (`~/.aws/credentials` and `~/.aws/config`,
//!    profile `AWS_PROFILE`): static keys, `region`, `endpoint_url`;
//! 3. otherwise `object_store`'s credential chain (web identity, ECS task
//!    role, EC2 instance metadata).
//!
//! `CREATE EXTERNAL TABLE ... OPTIONS ('aws.access_key_id' '...', ...)`
//! registers a store for that bucket from the options instead (on top of
//! the environment), as datafusion-cli does. Keys are `aws.` plus any
//! `object_store` S3 setting (`aws.region`, `aws.endpoint`, `aws.allow_http`,
//! ...) and `aws.max_retries` / `aws.retry_timeout_secs` for the retry policy.
//!
//! Credentials are never part of an error message, `Debug` output or a plan.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::common::{DataFusionError, Result, plan_err};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{ObjectStore, RetryConfig};
use url::Url;

/// Option-key prefix for S3 settings in `CREATE EXTERNAL TABLE ... OPTIONS`.
pub const AWS_OPTION_PREFIX: &str = "aws.";

/// DataFusion's registry, plus S3 stores created on first use from the
/// environment.
#[derive(Debug, Default)]
pub struct ClipObjectStoreRegistry {
    inner: DefaultObjectStoreRegistry,
}

impl ClipObjectStoreRegistry {
    /// A registry with the local file system registered.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ObjectStoreRegistry for ClipObjectStoreRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.inner.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.inner.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.inner.get_store(url) {
            return Ok(store);
        }
        match url.scheme() {
            "s3" | "s3a" => {
                let store = s3_store(url, &HashMap::new())?;
                self.inner.register_store(url, Arc::clone(&store));
                Ok(store)
            }
            _ => self.inner.get_store(url),
        }
    }
}

/// A `RuntimeEnv` using [`ClipObjectStoreRegistry`], for
/// `SessionContext::new_with_config_rt`.
pub fn runtime_env() -> Result<Arc<RuntimeEnv>> {
    RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(ClipObjectStoreRegistry::new()))
        .build_arc()
}

/// An S3 store for the bucket of `url`: the environment, then `options`
/// (keys without the `aws.` prefix) on top.
pub fn s3_store(url: &Url, options: &HashMap<String, String>) -> Result<Arc<dyn ObjectStore>> {
    let Some(bucket) = url.host_str().filter(|b| !b.is_empty()) else {
        return plan_err!("{url} has no bucket; write s3://bucket/prefix/");
    };
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    let env = |k: &str| std::env::var(k).ok();
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    for (key, value) in crate::store::aws_profile::profile_settings(&env, home)? {
        builder = builder.with_config(key, value);
    }
    let mut retry = RetryConfig::default();
    for (key, variable) in RETRY_VARIABLES {
        if let Ok(value) = std::env::var(variable) {
            set_retry(&mut retry, key, &value, variable)?;
        }
    }
    for (key, value) in options {
        match key.as_str() {
            "max_retries" | "retry_timeout_secs" => {
                set_retry(&mut retry, key, value, &format!("aws.{key}"))?
            }
            other => {
                let config_key: AmazonS3ConfigKey = other.parse().map_err(|_| {
                    DataFusionError::Plan(format!(
                        "unknown S3 option 'aws.{other}'; use object_store's S3 settings, e.g. \
                         'aws.access_key_id', 'aws.secret_access_key', 'aws.region', 'aws.endpoint', \
                         'aws.allow_http', or 'aws.max_retries'"
                    ))
                })?;
                builder = builder.with_config(config_key, value);
            }
        }
    }
    let store = builder.with_retry(retry).build().map_err(|e| {
        DataFusionError::External(Box::new(e)).context(format!("configuring S3 for s3://{bucket}"))
    })?;
    Ok(Arc::new(store))
}

/// The environment variables that set the S3 retry policy for every store
/// (table OPTIONS `aws.max_retries` / `aws.retry_timeout_secs` override
/// them): retries per request (object_store's default: 10) and the time
/// after which a request is no longer retried (default: 180 s).
pub const RETRY_VARIABLES: [(&str, &str); 2] = [
    ("max_retries", "CLIPQL_S3_MAX_RETRIES"),
    ("retry_timeout_secs", "CLIPQL_S3_RETRY_TIMEOUT_SECS"),
];

/// Sets one retry setting from `value`, named `name` in the error.
fn set_retry(retry: &mut RetryConfig, key: &str, value: &str, name: &str) -> Result<()> {
    let number: u64 = value.trim().parse().map_err(|_| {
        DataFusionError::Plan(format!("{name} must be a whole number, got '{value}'"))
    })?;
    match key {
        "max_retries" => retry.max_retries = number as usize,
        _ => retry.retry_timeout = Duration::from_secs(number),
    }
    Ok(())
}

/// Splits `aws.*` options off a table's options (prefix removed).
pub fn aws_options(options: &HashMap<String, String>) -> HashMap<String, String> {
    options
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(AWS_OPTION_PREFIX)
                .map(|k| (k.to_string(), v.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_s3_options_are_rejected_without_echoing_values() {
        let url = Url::parse("s3://bucket/x/").unwrap();
        let options = HashMap::from([("acess_key_id".to_string(), "SENTINEL-SECRET".to_string())]);
        let err = s3_store(&url, &options).unwrap_err().to_string();
        assert!(
            err.contains("unknown S3 option 'aws.acess_key_id'"),
            "{err}"
        );
        assert!(!err.contains("SENTINEL-SECRET"), "{err}");
        let err = s3_store(&Url::parse("s3:///x").unwrap(), &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no bucket"), "{err}");
    }

    #[test]
    fn local_files_still_resolve() {
        let registry = ClipObjectStoreRegistry::new();
        assert!(
            registry
                .get_store(&Url::parse("file:///tmp/").unwrap())
                .is_ok()
        );
        assert!(
            registry
                .get_store(&Url::parse("gs://bucket/").unwrap())
                .is_err()
        );
    }
}
