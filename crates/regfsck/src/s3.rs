//! Opens registries that the policy places in S3-compatible object storage.

use regfsck_core::Storage;
use regfsck_core::policy::StorageSpec;
use regfsck_s3::{S3Config, S3Storage};

/// The policy's storage settings over the location (URL or the registry's `config.yml`).
pub fn config(spec: &StorageSpec) -> Result<S3Config, String> {
    let mut cfg = match (&spec.url, &spec.registry_config) {
        (Some(url), _) => S3Config::from_url(url),
        (None, Some(path)) => S3Config::from_registry_config(path),
        (None, None) => return Err("no `storage` or `registry-config` for this registry".into()),
    }
    .map_err(|e| e.to_string())?;
    if let Some(e) = &spec.endpoint {
        cfg = cfg.with_endpoint(e.clone());
    }
    if let Some(r) = &spec.region {
        cfg = cfg.with_region(r.clone());
    }
    if let Some(p) = spec.path_style {
        cfg = cfg.with_path_style(p);
    }
    if let Some(h) = spec.allow_http {
        cfg = cfg.with_allow_http(h);
    }
    if spec.max_requests_per_second.is_some() {
        cfg = cfg.with_max_requests_per_second(spec.max_requests_per_second);
    }
    if let Some(c) = spec.concurrency {
        cfg = cfg.with_concurrency(c as usize);
    }
    Ok(cfg)
}

/// The [`OpenStorage`](regfsck_core::runner::OpenStorage) of the stock binary.
pub fn open(_registry: &str, spec: &StorageSpec) -> Result<Box<dyn Storage>, String> {
    let storage = S3Storage::new(config(spec)?).map_err(|e| e.to_string())?;
    Ok(Box::new(storage))
}
