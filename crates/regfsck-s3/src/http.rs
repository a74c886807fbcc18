//! The HTTP layer under `object_store`: every attempt it sends (retries included) passes here,
//! so this is where requests are counted by kind, where retries and throttling answers are
//! counted, and where the concurrency bound and the requests-per-second cap apply.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService,
    ReqwestConnector,
};
use tokio::sync::Semaphore;

/// S3 requests sent so far, by kind. Every HTTP attempt counts, so a retried request counts
/// once per attempt in its kind and once more in `retries`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestCounts {
    /// `ListObjectsV2` pages.
    pub list: u64,
    /// `GetObject`.
    pub get: u64,
    /// `HeadObject`.
    pub head: u64,
    /// `PutObject`.
    pub put: u64,
    /// `DeleteObject` and `DeleteObjects` (one per batch of up to 1000 keys).
    pub delete: u64,
    /// Attempts that repeated an earlier attempt after a retryable failure (5xx such as
    /// `503 SlowDown`, 429, 408, a timeout or a dropped connection).
    pub retries: u64,
    /// Answers that asked us to slow down: `503` (`SlowDown`) and `429`.
    pub throttled: u64,
}

impl RequestCounts {
    /// Every request sent, retries included.
    pub fn total(&self) -> u64 {
        self.list + self.get + self.head + self.put + self.delete
    }

    /// What was sent since `earlier` was taken.
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        RequestCounts {
            list: self.list - earlier.list,
            get: self.get - earlier.get,
            head: self.head - earlier.head,
            put: self.put - earlier.put,
            delete: self.delete - earlier.delete,
            retries: self.retries - earlier.retries,
            throttled: self.throttled - earlier.throttled,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    List,
    Get,
    Head,
    Put,
    Delete,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    list: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
    put: AtomicU64,
    delete: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    /// Fingerprints of attempts that failed in a way object_store retries. object_store
    /// re-sends the very same signed request, so a later attempt with the same fingerprint
    /// is a retry.
    failed: Mutex<HashSet<u64>>,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> RequestCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RequestCounts {
            list: get(&self.list),
            get: get(&self.get),
            head: get(&self.head),
            put: get(&self.put),
            delete: get(&self.delete),
            retries: get(&self.retries),
            throttled: get(&self.throttled),
        }
    }

    fn counter(&self, kind: Kind) -> &AtomicU64 {
        match kind {
            Kind::List => &self.list,
            Kind::Get => &self.get,
            Kind::Head => &self.head,
            Kind::Put => &self.put,
            Kind::Delete => &self.delete,
        }
    }

    fn failed(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The concurrency bound and the optional token bucket.
#[derive(Debug)]
pub(crate) struct Limits {
    in_flight: Semaphore,
    bucket: Option<Mutex<TokenBucket>>,
}

#[derive(Debug)]
struct TokenBucket {
    per_second: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl Limits {
    pub(crate) fn new(concurrency: usize, per_second: Option<u32>) -> Self {
        Self {
            in_flight: Semaphore::new(concurrency.max(1)),
            bucket: per_second.filter(|r| *r > 0).map(|r| {
                let per_second = f64::from(r);
                Mutex::new(TokenBucket {
                    per_second,
                    // A burst of at most one second's worth of requests.
                    capacity: per_second,
                    tokens: per_second,
                    last: Instant::now(),
                })
            }),
        }
    }

    /// Waits until the token bucket allows one more request.
    async fn take_token(&self) {
        let Some(bucket) = &self.bucket else { return };
        loop {
            let wait = {
                let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let refill = now.duration_since(b.last).as_secs_f64() * b.per_second;
                b.tokens = (b.tokens + refill).min(b.capacity);
                b.last = now;
                if b.tokens >= 1.0 {
                    b.tokens -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - b.tokens) / b.per_second)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Builds object_store's HTTP client on reqwest, wrapped in [`Metered`].
#[derive(Debug)]
pub(crate) struct MeteredConnector {
    pub(crate) counters: Arc<Counters>,
    pub(crate) limits: Arc<Limits>,
}

impl HttpConnector for MeteredConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Metered {
            inner,
            counters: Arc::clone(&self.counters),
            limits: Arc::clone(&self.limits),
        }))
    }
}

#[derive(Debug)]
struct Metered {
    inner: HttpClient,
    counters: Arc<Counters>,
    limits: Arc<Limits>,
}

#[async_trait]
impl HttpService for Metered {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        // Credential look-ups (instance metadata, STS) are not SigV4-signed: only S3 requests
        // are counted.
        let s3 = is_sigv4_signed(&req);
        let kind = s3.then(|| classify(&req));
        let print = s3.then(|| fingerprint(&req));
        self.limits.take_token().await;
        let _permit = self
            .limits
            .in_flight
            .acquire()
            .await
            .map_err(|e| HttpError::new(HttpErrorKind::Unknown, e))?;
        if let (Some(kind), Some(print)) = (kind, print) {
            self.counters.counter(kind).fetch_add(1, Ordering::Relaxed);
            if self.counters.failed().remove(&print) {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
        }
        let result = self.inner.execute(req).await;
        if let Some(print) = print {
            let retryable = match &result {
                Ok(r) => {
                    let status = r.status().as_u16();
                    if status == 503 || status == 429 {
                        self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                    }
                    status >= 500 || status == 429 || status == 408
                }
                Err(e) => !matches!(e.kind(), HttpErrorKind::Decode | HttpErrorKind::Unknown),
            };
            if retryable {
                self.counters.failed().insert(print);
            }
        }
        // The permit is released once the response head has arrived: a streamed body does not
        // hold a slot.
        result
    }
}

fn is_sigv4_signed(req: &HttpRequest) -> bool {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256"))
}

fn classify(req: &HttpRequest) -> Kind {
    let query = req.uri().query().unwrap_or("");
    let has = |name: &str| {
        query
            .split('&')
            .any(|p| p == name || p.split_once('=').is_some_and(|(k, _)| k == name))
    };
    match req.method().as_str() {
        "GET" if has("list-type") => Kind::List,
        "HEAD" => Kind::Head,
        "DELETE" => Kind::Delete,
        "POST" if has("delete") => Kind::Delete,
        "PUT" | "POST" => Kind::Put,
        _ => Kind::Get,
    }
}

/// The same signed request re-sent has the same method, URI and signature; a different
/// request (even to the same key) is signed at another time or over other headers.
fn fingerprint(req: &HttpRequest) -> u64 {
    let mut h = DefaultHasher::new();
    req.method().as_str().hash(&mut h);
    req.uri().to_string().hash(&mut h);
    if let Some(auth) = req.headers().get("authorization") {
        auth.as_bytes().hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn token_bucket_caps_the_rate() {
        let limits = Limits::new(4, Some(10));
        let start = tokio::time::Instant::now();
        for _ in 0..30 {
            limits.take_token().await;
        }
        // 10 at once (the burst), then 20 more at 10 per second.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(1900), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(2200), "{elapsed:?}");
    }
}
