//! regfsck's S3 backend: a registry whose `rootdirectory` lives in an S3 bucket (Distribution's
//! `s3` storage driver), behind [`regfsck_core::Storage`].
//!
//! A directory is a common prefix. [`S3Storage::list_blobs`](regfsck_core::Storage::list_blobs)
//! is one recursive paged listing of `blobs/sha256/` (1,000 blobs a request), never a request
//! per blob; `list_dir` is one paged `ListObjectsV2` with delimiter; `stat` is a HEAD (and, for a
//! directory, one listing page); `read` is a GET whose size is checked before the body is read;
//! `remove_dir_all` deletes exactly the keys below `path/`, as Distribution's driver does.
//!
//! The client is `object_store` (async); the storage owns a small tokio runtime and blocks on
//! it, so the public API is synchronous. Call it from plain threads (rayon's), not from inside
//! an async runtime. Credentials come from the environment only ([`S3Storage::new`]).

mod config;
mod http;
#[cfg(feature = "testing")]
pub mod testing;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ListResult, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode,
    PutPayload, RetryConfig,
};
use regfsck_core::storage::{BlobEntry, BlobListing, Entry, EntryKind, FileMeta};
use regfsck_core::{Digest, Storage, StorageError, layout};

pub use config::{DEFAULT_CONCURRENCY, S3Config, S3Error};
pub use http::RequestCounts;

use crate::http::{Counters, Limits, MeteredConnector};

/// Environment variables that carry credentials (or say where to get them). Nothing else is
/// read from the environment: bucket, endpoint and region come from [`S3Config`].
const CREDENTIAL_ENV: [&str; 12] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL_STS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_IMDSV1_FALLBACK",
    "AWS_METADATA_ENDPOINT",
];

/// How many keys one listing page holds (the S3 maximum and default).
const PAGE: usize = 1000;

/// A registry whose storage is an S3 bucket (or an S3-compatible store).
pub struct S3Storage {
    config: S3Config,
    store: Arc<AmazonS3>,
    runtime: Arc<tokio::runtime::Runtime>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for S3Storage {
    // Not derived: the client's own Debug output would include the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Storage")
            .field("location", &self.config.location())
            .field("endpoint", &self.config.endpoint)
            .field("requests", &self.requests())
            .finish_non_exhaustive()
    }
}

impl S3Storage {
    /// Opens the bucket. Nothing is sent yet: a wrong bucket or bad credentials show up as
    /// errors of the first request.
    ///
    /// Credentials come from the environment only: `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`; or web identity (`AWS_WEB_IDENTITY_TOKEN_FILE`
    /// with `AWS_ROLE_ARN`), ECS container credentials, and at last the EC2 instance metadata
    /// service. `AWS_PROFILE` (shared config files) is not supported: with `AWS_PROFILE` set
    /// and no `AWS_ACCESS_KEY_ID`, this refuses rather than silently use another identity.
    pub fn new(config: S3Config) -> Result<Self, S3Error> {
        Self::with_env(config, &|name| std::env::var(name).ok())
    }

    /// [`S3Storage::new`] with another environment than the process's: `env` answers for the
    /// variables named there (tests, and programs that keep an environment per registry).
    pub fn with_env(
        config: S3Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, S3Error> {
        validate(&config)?;
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        if env("AWS_PROFILE").is_some() && env("AWS_ACCESS_KEY_ID").is_none() {
            return Err(S3Error::Invalid(
                "AWS_PROFILE is set, but shared credential profiles are not supported: export \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) instead"
                    .into(),
            ));
        }
        let region = config
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into());

        let counters = Arc::new(Counters::default());
        let limits = Arc::new(Limits::new(
            config.concurrency,
            config.max_requests_per_second,
        ));
        let mut builder = AmazonS3Builder::new();
        for name in CREDENTIAL_ENV {
            if let Some(value) = env(name) {
                let key: AmazonS3ConfigKey = name
                    .to_ascii_lowercase()
                    .parse()
                    .map_err(|e| S3Error::Client(format!("{name}: {e}")))?;
                builder = builder.with_config(key, value);
            }
        }
        builder = builder
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(config.allow_http)
                    .with_pool_max_idle_per_host(config.concurrency)
                    .with_connect_timeout(Duration::from_secs(10))
                    // No cap on a whole request (a streamed multi-GB blob takes long), but a
                    // connection that stays silent this long fails and is retried.
                    .with_timeout_disabled()
                    .with_read_timeout(Duration::from_secs(30)),
            )
            .with_bucket_name(&config.bucket)
            .with_region(region)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(15),
                    base: 2.0,
                },
                max_retries: 10,
                retry_timeout: Duration::from_secs(180),
            })
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_http_connector(MeteredConnector {
                counters: Arc::clone(&counters),
                limits,
            });
        builder = match &config.endpoint {
            None => builder.with_virtual_hosted_style_request(!config.path_style),
            Some(endpoint) if config.path_style => builder
                .with_endpoint(endpoint.trim_end_matches('/'))
                .with_virtual_hosted_style_request(false),
            // object_store takes a virtual-hosted endpoint with the bucket already in it.
            Some(endpoint) => builder
                .with_endpoint(virtual_hosted(endpoint, &config.bucket))
                .with_virtual_hosted_style_request(true),
        };
        let store = builder
            .build()
            .map_err(|e| S3Error::Client(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("regfsck-s3")
            .enable_all()
            .build()
            .map_err(|e| S3Error::Client(format!("tokio runtime: {e}")))?;
        Ok(Self {
            config,
            store: Arc::new(store),
            runtime: Arc::new(runtime),
            counters,
        })
    }

    /// Requests sent so far, by kind (retries included).
    pub fn requests(&self) -> RequestCounts {
        self.counters.snapshot()
    }

    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// The bucket key of a registry-relative path; refuses anything but plain components.
    fn key(&self, path: &str) -> Result<String, StorageError> {
        let plain = !path.is_empty()
            && path.split('/').all(|c| {
                !c.is_empty() && c != "." && c != ".." && !c.chars().any(char::is_control)
            });
        if !plain {
            return Err(StorageError::Refused {
                path: path.to_string(),
                reason: "not a plain relative path inside the registry".into(),
            });
        }
        Ok(if self.config.root.is_empty() {
            path.to_string()
        } else {
            format!("{}/{path}", self.config.root)
        })
    }

    fn object_path(&self, path: &str) -> Result<ObjectPath, StorageError> {
        let key = self.key(path)?;
        ObjectPath::parse(&key).map_err(|e| StorageError::Refused {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }

    fn block<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Lists `prefix` (which ends with `/`) page by page, handing each page to `each` until
    /// it returns false or the listing ends.
    async fn list_pages(
        &self,
        prefix: &str,
        delimiter: bool,
        max_keys: Option<usize>,
        each: impl FnMut(ListResult) -> bool,
    ) -> object_store::Result<()> {
        self.list_pages_after(prefix, delimiter, max_keys, None, each)
            .await
    }

    /// [`S3Storage::list_pages`] from the first key after `offset` (ListObjectsV2's
    /// `start-after`).
    async fn list_pages_after(
        &self,
        prefix: &str,
        delimiter: bool,
        max_keys: Option<usize>,
        offset: Option<String>,
        mut each: impl FnMut(ListResult) -> bool,
    ) -> object_store::Result<()> {
        let mut page_token = None;
        loop {
            let page = self
                .store
                .list_paginated(
                    Some(prefix),
                    PaginatedListOptions {
                        offset: offset.clone(),
                        delimiter: delimiter.then_some(Cow::Borrowed("/")),
                        max_keys,
                        page_token: page_token.take(),
                        ..Default::default()
                    },
                )
                .await?;
            if !each(page.result) {
                return Ok(());
            }
            match page.page_token {
                Some(t) if !t.is_empty() => page_token = Some(t),
                _ => return Ok(()),
            }
        }
    }

    /// Every object below `prefix` (which ends with `/`), listed as `bounds.len() + 1`
    /// listings side by side: listing `i` takes the keys `k` with `bounds[i-1] <= k <
    /// bounds[i]` (full keys, sorted), starting just below its lower bound and stopping at
    /// its upper one. The ranges cover every key exactly once whatever the bounds are, and
    /// each listing costs at most one page more than its share of the keys.
    async fn list_ranges(
        &self,
        prefix: &str,
        bounds: &[String],
        each: &mut dyn FnMut(ObjectMeta),
    ) -> object_store::Result<()> {
        let each = std::cell::RefCell::new(each);
        let range = |i: usize| {
            let lower = i.checked_sub(1).map(|j| bounds[j].as_str());
            let upper = bounds.get(i).map(String::as_str);
            let each = &each;
            // Below the bound's last name: servers that list a directory tree (SeaweedFS)
            // order a start-after by names, not by keys.
            let offset = lower.map(|l| just_below(l.trim_end_matches('/')));
            self.list_pages_after(prefix, false, None, offset, move |page| {
                for object in page.objects {
                    let key = object.location.as_ref();
                    if lower.is_some_and(|l| key < l) {
                        continue;
                    }
                    if upper.is_some_and(|u| key >= u) {
                        return false;
                    }
                    (each.borrow_mut())(object);
                }
                true
            })
        };
        let all = futures_util::future::join_all((0..=bounds.len()).map(range)).await;
        all.into_iter().collect()
    }

    /// The names directly below `prefix` (common prefixes, sorted), as full keys.
    async fn subprefixes(&self, prefix: &str) -> object_store::Result<Vec<String>> {
        let mut out = Vec::new();
        self.list_pages(prefix, true, None, |page| {
            out.extend(
                page.common_prefixes
                    .iter()
                    .map(|p| format!("{}/", p.as_ref())),
            );
            true
        })
        .await?;
        out.sort();
        Ok(out)
    }

    /// Every key below `prefix` (which ends with `/`).
    fn list_keys(&self, path: &str, prefix: &str) -> Result<Vec<ObjectPath>, StorageError> {
        let mut keys = Vec::new();
        self.block(self.list_pages(prefix, false, None, |page| {
            keys.extend(page.objects.into_iter().map(|o| o.location));
            true
        }))
        .map_err(|e| io_error(path, e))?;
        Ok(keys)
    }

    fn blob_listing(&self) -> BlobListing {
        let mut listing = BlobListing::default();
        let base = match self.key(layout::BLOBS) {
            Ok(k) => k,
            Err(e) => {
                listing.problems.push(e);
                return listing;
            }
        };
        let prefix = format!("{base}/");
        let mut found = BlobKeys::default();
        let mut seen = false;
        // Sixteen listings side by side, split at the first hex digit of the digest.
        let bounds: Vec<String> = "123456789abcdef"
            .chars()
            .map(|c| format!("{prefix}{c}"))
            .collect();
        let result = self.block(self.list_ranges(&prefix, &bounds, &mut |object| {
            seen = true;
            // Not below the prefix: a `blobs/sha256/` directory marker.
            if let Some(rel) = object.location.as_ref().strip_prefix(&prefix) {
                found.add(
                    rel,
                    object.size,
                    Some(SystemTime::from(object.last_modified)),
                );
            }
        }));
        listing.store_present = seen;
        if let Err(e) = result {
            // A listing that broke off leaves blobs unseen: every link to them would look
            // orphaned. Say the store is not there, so that nothing is fixed on this registry.
            listing.store_present = false;
            let mut err = io_error(layout::BLOBS, e);
            if let StorageError::Io { source, .. } = &mut err {
                *source = io::Error::new(
                    source.kind(),
                    format!(
                        "the blob listing broke off after {} blob(s), so the blob store is \
                         treated as missing: {source}",
                        found.blobs.len()
                    ),
                );
            }
            listing.problems.push(err);
        }
        let (blobs, problems) = found.finish();
        listing.blobs = blobs;
        listing.problems.extend(problems);
        listing
    }
}

/// What the keys below `blobs/sha256/` say, read as the filesystem's default listing would
/// read the same tree: `<2 hex>/<64 hex>/data` is a blob's data, any other key below a
/// `<2 hex>/<64 hex>/` prefix makes that blob directory exist, and anything else is out of
/// place.
#[derive(Debug, Default)]
struct BlobKeys {
    blobs: BTreeMap<Digest, Option<FileMeta>>,
    /// Out-of-place paths: their kind, and whether a zero-byte object sits exactly there
    /// (possibly a folder marker `path/`, which object_store reads as `path`).
    odd: BTreeMap<String, (EntryKind, bool)>,
    /// The `<2 hex>` prefixes that hold blobs.
    prefixes: BTreeSet<String>,
}

impl BlobKeys {
    /// One key, relative to `blobs/sha256/`.
    fn add(&mut self, rel: &str, size: u64, modified: Option<SystemTime>) {
        let parts: Vec<&str> = rel.split('/').collect();
        let path = |n: usize| format!("{}/{}", layout::BLOBS, parts[..n].join("/"));
        let kind = |n: usize| {
            if parts.len() > n {
                EntryKind::Dir
            } else {
                EntryKind::File
            }
        };
        let empty = |n: usize| parts.len() == n && size == 0;
        if parts.len() < 2 || parts[0].len() != 2 {
            self.odd.entry(path(1)).or_insert((kind(1), empty(1)));
            return;
        }
        let digest = Digest::from_hex(parts[1])
            .filter(|d| d.hex().starts_with(parts[0]))
            .filter(|_| parts.len() > 2);
        let Some(digest) = digest else {
            self.odd.entry(path(2)).or_insert((kind(2), empty(2)));
            return;
        };
        if !self.prefixes.contains(parts[0]) {
            self.prefixes.insert(parts[0].to_string());
        }
        let data = self.blobs.entry(digest).or_default();
        if parts.len() == 3 && parts[2] == "data" {
            *data = Some(FileMeta {
                size,
                modified,
                kind: EntryKind::File,
            });
        }
    }

    /// The blobs, sorted by digest, and the out-of-place paths as problems.
    fn finish(self) -> (Vec<BlobEntry>, Vec<StorageError>) {
        // A zero-byte object named like a directory that holds blobs is that directory's
        // marker, not a stray file.
        let is_marker = |path: &str| {
            let rel = path
                .strip_prefix(layout::BLOBS)
                .and_then(|r| r.strip_prefix('/'))
                .unwrap_or_default();
            match rel.split_once('/') {
                None => self.prefixes.contains(rel),
                Some((_, hex)) => {
                    Digest::from_hex(hex).is_some_and(|d| self.blobs.contains_key(&d))
                }
            }
        };
        let problems = self
            .odd
            .iter()
            .filter(|(path, (_, empty))| !(*empty && is_marker(path)))
            .map(|(path, (kind, _))| StorageError::Refused {
                path: path.clone(),
                reason: format!("unexpected {kind:?} in the blob store (ignored)").to_lowercase(),
            })
            .collect();
        let blobs = self
            .blobs
            .into_iter()
            .map(|(digest, data)| BlobEntry { digest, data })
            .collect();
        (blobs, problems)
    }
}

impl Storage for S3Storage {
    fn location(&self) -> String {
        self.config.location()
    }

    fn list_dir(&self, path: &str) -> Result<Option<Vec<Entry>>, StorageError> {
        let prefix = format!("{}/", self.key(path)?);
        let mut entries = Vec::new();
        let mut seen = false;
        self.block(self.list_pages(&prefix, true, None, |page| {
            let dirs = page
                .common_prefixes
                .iter()
                .map(|p| (p.as_ref(), EntryKind::Dir));
            let files = page
                .objects
                .iter()
                .map(|o| (o.location.as_ref(), EntryKind::File));
            for (key, kind) in dirs.chain(files) {
                seen = true;
                // Skip a directory marker (`path/`, which object_store reads as `path`).
                let Some(name) = key.strip_prefix(&prefix) else {
                    continue;
                };
                if !name.is_empty() && !name.contains('/') {
                    entries.push(Entry {
                        name: name.to_string(),
                        kind,
                        utf8: true,
                    });
                }
            }
            true
        }))
        .map_err(|e| io_error(path, e))?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(seen.then_some(entries))
    }

    fn stat(&self, path: &str) -> Result<Option<FileMeta>, StorageError> {
        let location = self.object_path(path)?;
        match self.block(self.store.head(&location)) {
            Ok(meta) => {
                return Ok(Some(FileMeta {
                    size: meta.size,
                    modified: Some(SystemTime::from(meta.last_modified)),
                    kind: EntryKind::File,
                }));
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(io_error(path, e)),
        }
        // A directory is a prefix with keys below it. Its modification time is the newest key
        // of the first listing page (the whole directory for what regfsck stats: a link
        // directory, an upload).
        let prefix = format!("{}/", self.key(path)?);
        let mut newest: Option<SystemTime> = None;
        let mut seen = false;
        self.block(self.list_pages(&prefix, false, Some(PAGE), |page| {
            for o in page.objects {
                seen = true;
                let t = SystemTime::from(o.last_modified);
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
            false
        }))
        .map_err(|e| io_error(path, e))?;
        Ok(seen.then_some(FileMeta {
            size: 0,
            modified: newest,
            kind: EntryKind::Dir,
        }))
    }

    fn read(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let location = self.object_path(path)?;
        let too_large = || StorageError::TooLarge {
            path: path.to_string(),
            limit,
        };
        let result = self.block(async {
            let got = self.store.get(&location).await?;
            // The size is in the response head: an oversized object's body is never read.
            if got.meta.size > limit {
                return Ok(None);
            }
            got.bytes().await.map(Some)
        });
        match result {
            Ok(Some(bytes)) if bytes.len() as u64 <= limit => Ok(Some(bytes.to_vec())),
            Ok(_) => Err(too_large()),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(io_error(path, e)),
        }
    }

    fn open(&self, path: &str) -> Result<Option<Box<dyn io::Read + Send>>, StorageError> {
        let location = self.object_path(path)?;
        match self.block(self.store.get(&location)) {
            Ok(got) => Ok(Some(Box::new(StreamReader {
                runtime: Arc::clone(&self.runtime),
                stream: got.into_stream(),
                chunk: Bytes::new(),
            }))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(io_error(path, e)),
        }
    }

    fn remove_dir_all(&self, path: &str) -> Result<(), StorageError> {
        let prefix = format!("{}/", self.key(path)?);
        let keys = self.list_keys(path, &prefix)?;
        // Never anything outside `path/`: `…/abc/` must not take `…/abcd/x` along.
        if keys.iter().any(|k| !k.as_ref().starts_with(&prefix)) {
            return Err(StorageError::Refused {
                path: path.to_string(),
                reason: "the listing returned keys outside the directory".into(),
            });
        }
        if keys.is_empty() {
            return Err(StorageError::io(
                path,
                io::Error::new(io::ErrorKind::NotFound, "no object below this directory"),
            ));
        }
        let total = keys.len();
        let results: Vec<object_store::Result<ObjectPath>> = self.block(
            self.store
                .delete_stream(futures_util::stream::iter(keys.into_iter().map(Ok)).boxed())
                .collect(),
        );
        let failed: Vec<object_store::Error> =
            results.into_iter().filter_map(Result::err).collect();
        match failed.into_iter().next() {
            None => Ok(()),
            Some(first) => {
                let err = io_error(path, first);
                Err(match err {
                    StorageError::Io { path, source } => StorageError::Io {
                        path,
                        source: io::Error::new(
                            source.kind(),
                            format!("deleting {total} object(s) failed at least in part: {source}"),
                        ),
                    },
                    other => other,
                })
            }
        }
    }

    fn create_new(&self, path: &str, content: &[u8]) -> Result<(), StorageError> {
        let location = self.object_path(path)?;
        let exists = || {
            StorageError::io(
                path,
                io::Error::new(io::ErrorKind::AlreadyExists, "the object already exists"),
            )
        };
        // HEAD first: refuses even on a store that ignores conditional requests. The
        // conditional PUT below then closes the race on stores that honour it.
        match self.block(self.store.head(&location)) {
            Ok(_) => return Err(exists()),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(io_error(path, e)),
        }
        let payload = PutPayload::from(content.to_vec());
        let put = self.block(self.store.put_opts(
            &location,
            payload.clone(),
            PutMode::Create.into(),
        ));
        match put {
            Ok(_) => Ok(()),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {
                // A retried PUT whose first attempt was stored after all meets its own object:
                // the same content, so it was created.
                match self.read(path, content.len() as u64) {
                    Ok(Some(stored)) if stored == content => Ok(()),
                    _ => Err(exists()),
                }
            }
            Err(object_store::Error::NotImplemented { .. }) => self
                .block(self.store.put(&location, payload))
                .map(|_| ())
                .map_err(|e| io_error(path, e)),
            Err(e) => Err(io_error(path, e)),
        }
    }

    /// Recursive paged listings of `repositories/`, split into ranges listed side by side:
    /// the scan builds every repository from the keys, with no request per repository or per
    /// link.
    fn walk_files(
        &self,
        dir: &str,
        visit: &mut dyn FnMut(&str, FileMeta),
    ) -> Option<Result<(), StorageError>> {
        let base = match self.key(dir) {
            Ok(k) => k,
            Err(e) => return Some(Err(e)),
        };
        let prefix = format!("{base}/");
        let result = self.block(async {
            // Split at the names directly below (one more listing with a delimiter), into
            // as many ranges as requests may be in flight.
            let names = self.subprefixes(&prefix).await?;
            let parts = self.config.concurrency.clamp(1, MAX_LISTINGS);
            let bounds: Vec<String> = (1..parts)
                .filter_map(|i| names.get(i * names.len() / parts).cloned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            self.list_ranges(&prefix, &bounds, &mut |object| {
                if let Some(rel) = object.location.as_ref().strip_prefix(&prefix) {
                    let meta = FileMeta {
                        size: object.size,
                        modified: Some(SystemTime::from(object.last_modified)),
                        kind: EntryKind::File,
                    };
                    visit(rel, meta);
                }
            })
            .await
        });
        Some(result.map_err(|e| io_error(dir, e)))
    }

    fn parallelism(&self) -> Option<usize> {
        Some(self.config.concurrency.max(1))
    }

    fn stats(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self.requests()).ok()
    }

    fn list_blobs(&self) -> BlobListing {
        self.blob_listing()
    }
}

/// Listings of one prefix side by side, at most (each pays up to a page more than its share).
const MAX_LISTINGS: usize = 16;

/// A key that sorts just below `bound` (ListObjectsV2's `start-after` is exclusive) both as
/// a key and as a name in its directory: its last character one lower, then DEL, so that only
/// keys the caller filters out lie in between.
fn just_below(bound: &str) -> String {
    let mut out = bound.to_string();
    match out.pop() {
        Some(c) if c.is_ascii() && c > '!' => {
            // Never a `/`: that would name a directory below the parent.
            let lower = char::from(c as u8 - 1);
            out.push(if lower == '/' { '.' } else { lower });
            out.push('\x7f');
        }
        _ => {}
    }
    out
}

/// A streaming GET body as a blocking reader.
struct StreamReader {
    runtime: Arc<tokio::runtime::Runtime>,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
}

impl io::Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.runtime.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(io::Error::new(kind_of(&e), e)),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

fn kind_of(e: &object_store::Error) -> io::ErrorKind {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => io::ErrorKind::NotFound,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
        E::AlreadyExists { .. } | E::Precondition { .. } => io::ErrorKind::AlreadyExists,
        _ => io::ErrorKind::Other,
    }
}

fn io_error(path: &str, e: object_store::Error) -> StorageError {
    StorageError::io(path, io::Error::new(kind_of(&e), e.to_string()))
}

/// `https://host:port` → `https://bucket.host:port`.
fn virtual_hosted(endpoint: &str, bucket: &str) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    match endpoint.split_once("://") {
        Some((scheme, host)) => format!("{scheme}://{bucket}.{host}"),
        None => format!("{bucket}.{endpoint}"),
    }
}

fn validate(config: &S3Config) -> Result<(), S3Error> {
    let bad = |why: String| Err(S3Error::Invalid(format!("{}: {why}", config.location())));
    if config.bucket.is_empty() || config.bucket.contains('/') {
        return bad(format!("{:?} is not a bucket name", config.bucket));
    }
    let root = config::normalize_root(&config.root);
    if root != config.root
        || (!root.is_empty()
            && root
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == ".." || c.chars().any(char::is_control)))
    {
        return bad(format!(
            "root {:?} is not a plain relative path (no leading or trailing /, no empty, . or .. \
             components)",
            config.root
        ));
    }
    if config.concurrency == 0 {
        return bad("concurrency must be at least 1".into());
    }
    if config.max_requests_per_second == Some(0) {
        return bad("max_requests_per_second must be at least 1".into());
    }
    if let Some(endpoint) = &config.endpoint {
        if endpoint.starts_with("http://") {
            if !config.allow_http {
                return bad(format!(
                    "endpoint {endpoint} is plain http, but allow_http is false"
                ));
            }
        } else if !endpoint.starts_with("https://") {
            return bad(format!(
                "endpoint {endpoint} must start with http:// or https://"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_starts_just_below_its_bound_as_a_key_and_as_a_name() {
        for (bound, below) in [
            ("r/repositories/abc", "r/repositories/abb\x7f"),
            ("r/blobs/sha256/1", "r/blobs/sha256/0\x7f"),
            ("r/repositories/ab0", "r/repositories/ab.\x7f"),
        ] {
            let got = just_below(bound);
            assert_eq!(got, below);
            assert!(got.as_str() < bound);
            // Every key below the bound's directory sorts after it.
            assert!(got < format!("{bound}/x"));
        }
    }

    #[test]
    fn refuses_unusable_configs() {
        let ok = S3Config::from_url("s3://b/r").expect("url");
        assert!(validate(&ok).is_ok());
        for bad in [
            ok.clone().with_concurrency(0),
            ok.clone().with_max_requests_per_second(Some(0)),
            ok.clone().with_endpoint("http://127.0.0.1:9000"),
            ok.clone().with_endpoint("127.0.0.1:9000"),
            S3Config {
                root: "a//b".into(),
                ..ok.clone()
            },
            S3Config {
                root: "a/../b".into(),
                ..ok.clone()
            },
        ] {
            assert!(validate(&bad).is_err(), "{bad:?}");
        }
        assert!(
            validate(
                &ok.clone()
                    .with_endpoint("http://127.0.0.1:9000")
                    .with_allow_http(true)
            )
            .is_ok()
        );
    }

    #[test]
    fn reads_blob_keys_like_the_filesystem_listing() {
        let hex = |c: &str| c.repeat(64);
        let (a, b, c) = (hex("a"), hex("b"), hex("c"));
        let mut keys = BlobKeys::default();
        keys.add(&format!("aa/{a}/data"), 5, None);
        keys.add(&format!("aa/{a}/data.tmp"), 1, None);
        keys.add(&format!("bb/{b}/startedat"), 1, None); // a blob directory without data
        keys.add("aa", 0, None); // marker of `aa/`
        keys.add(&format!("aa/{a}"), 0, None); // marker of `aa/<a>/`
        keys.add(&format!("cc/{c}"), 0, None); // an empty file where a directory belongs
        keys.add("cc/stray", 3, None);
        keys.add("stray", 0, None);
        keys.add(&format!("ab/{a}/data"), 1, None); // under the wrong prefix
        keys.add("abc/x", 1, None);
        let (blobs, problems) = keys.finish();
        let blobs: Vec<_> = blobs
            .iter()
            .map(|b| (b.digest.hex(), b.data.map(|m| (m.size, m.kind))))
            .collect();
        assert_eq!(
            blobs,
            [(a.clone(), Some((5, EntryKind::File))), (b.clone(), None)]
        );
        let problems: Vec<String> = problems
            .iter()
            .map(|p| format!("{} {}", p.path(), p.reason()))
            .collect();
        let blobs_dir = layout::BLOBS;
        assert_eq!(
            problems,
            [
                format!("{blobs_dir}/ab/{a} unexpected dir in the blob store (ignored)"),
                format!("{blobs_dir}/abc unexpected dir in the blob store (ignored)"),
                format!("{blobs_dir}/cc/{c} unexpected file in the blob store (ignored)"),
                format!("{blobs_dir}/cc/stray unexpected file in the blob store (ignored)"),
                format!("{blobs_dir}/stray unexpected file in the blob store (ignored)"),
            ]
        );
    }

    #[test]
    fn builds_virtual_hosted_endpoints() {
        assert_eq!(
            virtual_hosted("https://s3.local:9000/", "bkt"),
            "https://bkt.s3.local:9000"
        );
    }
}
