//! Where a registry's S3 storage is: from an `s3://bucket/prefix` URL or from the registry's own
//! `config.yml`. Credentials are never part of it: they come from the environment only.

use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

/// Default number of requests in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// Where one registry's storage lives in S3, and how hard regfsck may hit it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The registry's `rootdirectory` inside the bucket, without leading or trailing `/`;
    /// empty when the registry writes at the top of the bucket.
    pub root: String,
    /// An S3-compatible endpoint (`https://minio.example:9000`); `None` for AWS.
    pub endpoint: Option<String>,
    /// The signing region; `None` takes `AWS_REGION`, then `AWS_DEFAULT_REGION`, then
    /// `us-east-1`.
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`) instead of virtual-hosted ones
    /// (`bucket.endpoint/key`).
    pub path_style: bool,
    /// Allow plain `http://` endpoints.
    pub allow_http: bool,
    /// Cap on requests per second, retries included (a token bucket); `None` for no cap.
    pub max_requests_per_second: Option<u32>,
    /// Requests in flight at once (default 16).
    pub concurrency: usize,
}

/// Why a configuration could not be built or a storage could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("{url}: {reason}")]
    Url { url: String, reason: String },
    #[error("{}: {source}", file.display())]
    ReadConfig {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", file.display())]
    ParseConfig { file: PathBuf, reason: String },
    /// A key of the registry's configuration is missing or unusable.
    #[error("{}: `{key}`: {reason}", file.display())]
    ConfigKey {
        file: PathBuf,
        key: String,
        reason: String,
    },
    /// The configuration cannot be used to talk to S3.
    #[error("{0}")]
    Invalid(String),
    #[error("cannot start the S3 client: {0}")]
    Client(String),
}

impl S3Config {
    /// A configuration for `bucket` with every other setting at its default.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            root: String::new(),
            endpoint: None,
            region: None,
            path_style: false,
            allow_http: false,
            max_requests_per_second: None,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    /// Parses `s3://bucket` or `s3://bucket/rootdirectory`.
    pub fn from_url(url: &str) -> Result<Self, S3Error> {
        let bad = |reason: &str| S3Error::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("expected s3://BUCKET[/ROOTDIRECTORY]"))?;
        if rest.contains(['?', '#']) {
            return Err(bad("query strings and fragments are not supported"));
        }
        let (bucket, root) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("the bucket name is empty"));
        }
        Ok(Self::new(bucket).with_root(root))
    }

    /// Sets the registry's `rootdirectory` (leading and trailing `/` are ignored, as
    /// Distribution's s3 driver does).
    pub fn with_root(mut self, root: impl AsRef<str>) -> Self {
        self.root = normalize_root(root.as_ref());
        self
    }

    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    pub fn with_path_style(mut self, path_style: bool) -> Self {
        self.path_style = path_style;
        self
    }

    pub fn with_allow_http(mut self, allow_http: bool) -> Self {
        self.allow_http = allow_http;
        self
    }

    pub fn with_max_requests_per_second(mut self, rps: Option<u32>) -> Self {
        self.max_requests_per_second = rps;
        self
    }

    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// `s3://bucket/root`, for messages.
    pub fn location(&self) -> String {
        if self.root.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.root)
        }
    }

    /// Reads Distribution's own `config.yml`: `storage.s3` (or `storage.s3aws`) with `bucket`,
    /// `region`, `regionendpoint`, `rootdirectory`, `secure` and `forcepathstyle`.
    ///
    /// `accesskey`, `secretkey` and every other key are ignored: credentials come from the
    /// environment only. Without `forcepathstyle`, path-style requests are used exactly when
    /// `regionendpoint` is set (what Distribution 2.8 does; 3.x users with a virtual-hosted
    /// endpoint set `forcepathstyle: false` explicitly).
    pub fn from_registry_config(path: &Path) -> Result<Self, S3Error> {
        let text = std::fs::read_to_string(path).map_err(|source| S3Error::ReadConfig {
            file: path.to_path_buf(),
            source,
        })?;
        Self::from_registry_config_str(path, &text)
    }

    /// [`S3Config::from_registry_config`] on text already read; `file` names it in errors.
    pub fn from_registry_config_str(file: &Path, text: &str) -> Result<Self, S3Error> {
        let key_err = |key: &str, reason: String| S3Error::ConfigKey {
            file: file.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        let docs = YamlLoader::load_from_str(text).map_err(|e| S3Error::ParseConfig {
            file: file.to_path_buf(),
            reason: format!("not valid YAML: {e}"),
        })?;
        let doc = docs.first().ok_or_else(|| S3Error::ParseConfig {
            file: file.to_path_buf(),
            reason: "the file is empty".into(),
        })?;
        let storage = match &doc["storage"] {
            Yaml::Hash(h) => h,
            Yaml::BadValue | Yaml::Null => {
                return Err(key_err(
                    "storage",
                    "missing: no storage driver configured".into(),
                ));
            }
            _ => return Err(key_err("storage", "expected a mapping".into())),
        };
        let (driver, s3) = ["s3", "s3aws"]
            .iter()
            .find_map(|d| storage.get(&Yaml::String((*d).into())).map(|v| (*d, v)))
            .ok_or_else(|| {
                let drivers: Vec<String> = storage
                    .keys()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect();
                key_err(
                    "storage.s3",
                    format!(
                        "missing: this registry uses {} storage, not s3",
                        if drivers.is_empty() {
                            "no".to_string()
                        } else {
                            drivers.join(", ")
                        }
                    ),
                )
            })?;
        if !matches!(s3, Yaml::Hash(_)) {
            return Err(key_err(
                &format!("storage.{driver}"),
                "expected a mapping".into(),
            ));
        }
        let string = |name: &str| -> Result<Option<String>, S3Error> {
            let key = format!("storage.{driver}.{name}");
            match &s3[name] {
                Yaml::BadValue | Yaml::Null => Ok(None),
                Yaml::String(s) => Ok(Some(s.clone())),
                Yaml::Integer(i) => Ok(Some(i.to_string())),
                Yaml::Real(r) => Ok(Some(r.clone())),
                Yaml::Boolean(b) => Ok(Some(b.to_string())),
                _ => Err(key_err(&key, "expected a string".into())),
            }
        };
        let boolean = |name: &str, default: bool| -> Result<bool, S3Error> {
            let key = format!("storage.{driver}.{name}");
            match &s3[name] {
                Yaml::BadValue | Yaml::Null => Ok(default),
                Yaml::Boolean(b) => Ok(*b),
                Yaml::String(s) => parse_bool(s)
                    .ok_or_else(|| key_err(&key, format!("expected a boolean, found {s:?}"))),
                Yaml::Integer(i @ (0 | 1)) => Ok(*i == 1),
                _ => Err(key_err(&key, "expected a boolean".into())),
            }
        };

        let bucket = string("bucket")?
            .filter(|b| !b.is_empty())
            .ok_or_else(|| key_err(&format!("storage.{driver}.bucket"), "missing".into()))?;
        let region = string("region")?.filter(|r| !r.is_empty());
        let endpoint = string("regionendpoint")?.filter(|e| !e.is_empty());
        if region.is_none() && endpoint.is_none() {
            return Err(key_err(
                &format!("storage.{driver}.region"),
                "missing (required when regionendpoint is not set)".into(),
            ));
        }
        let secure = boolean("secure", true)?;
        let path_style = boolean("forcepathstyle", endpoint.is_some())?;
        let root = string("rootdirectory")?.unwrap_or_default();

        let mut allow_http = !secure;
        let endpoint = endpoint.map(|e| {
            if e.starts_with("http://") {
                allow_http = true;
                e
            } else if e.starts_with("https://") {
                e
            } else if secure {
                format!("https://{e}")
            } else {
                format!("http://{e}")
            }
        });
        let mut config = Self::new(bucket)
            .with_root(root)
            .with_path_style(path_style)
            .with_allow_http(allow_http);
        config.endpoint = endpoint;
        config.region = region;
        Ok(config)
    }
}

/// Distribution accepts Go's `strconv.ParseBool` spellings; YAML 1.1 (which Go's yaml.v2
/// reads) adds yes/no/on/off.
fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "y" | "yes" | "on" => Some(true),
        "0" | "f" | "false" | "n" | "no" | "off" => Some(false),
        _ => None,
    }
}

pub(crate) fn normalize_root(root: &str) -> String {
    root.trim_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<S3Config, S3Error> {
        S3Config::from_registry_config_str(Path::new("/etc/docker/registry/config.yml"), text)
    }

    #[test]
    fn parses_urls() {
        let c = S3Config::from_url("s3://bkt/a/b/").expect("url");
        assert_eq!((c.bucket.as_str(), c.root.as_str()), ("bkt", "a/b"));
        assert_eq!(c.concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(c.location(), "s3://bkt/a/b");
        let c = S3Config::from_url("s3://bkt").expect("url");
        assert_eq!(c.root, "");
        assert_eq!(c.location(), "s3://bkt");
        for bad in ["bkt/a", "s3:///a", "https://bkt/a", "s3://bkt/a?x=1"] {
            assert!(S3Config::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_distributions_config() {
        let c = parse(
            "version: 0.1\nstorage:\n  cache:\n    blobdescriptor: inmemory\n  s3:\n    accesskey: AKIA-IGNORED\n    secretkey: ignored\n    region: eu-west-1\n    regionendpoint: minio.local:9000\n    bucket: registry\n    secure: false\n    rootdirectory: /srv/private/\nhttp:\n  addr: :5000\n",
        )
        .expect("config");
        assert_eq!(c.bucket, "registry");
        assert_eq!(c.root, "srv/private");
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert_eq!(c.endpoint.as_deref(), Some("http://minio.local:9000"));
        assert!(c.allow_http);
        assert!(c.path_style, "path style by default with an endpoint (2.8)");

        let c = parse(
            "storage:\n  s3:\n    region: us-east-1\n    bucket: b\n    forcepathstyle: \"false\"\n",
        )
        .expect("config");
        assert_eq!(
            (c.endpoint, c.path_style, c.allow_http),
            (None, false, false)
        );
        assert_eq!(c.root, "");

        let c = parse(
            "storage:\n  s3:\n    regionendpoint: https://s3.local\n    bucket: b\n    forcepathstyle: false\n    secure: yes\n",
        )
        .expect("config");
        assert_eq!(c.endpoint.as_deref(), Some("https://s3.local"));
        assert!(!c.path_style && !c.allow_http);
        assert_eq!(c.region, None);
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let cases = [
            (
                "storage:\n  filesystem:\n    rootdirectory: /var/lib/registry\n",
                "`storage.s3`",
            ),
            (
                "storage:\n  s3:\n    region: us-east-1\n",
                "`storage.s3.bucket`",
            ),
            ("storage:\n  s3:\n    bucket: b\n", "`storage.s3.region`"),
            (
                "storage:\n  s3:\n    bucket: b\n    region: r\n    secure: maybe\n",
                "`storage.s3.secure`",
            ),
            (
                "storage:\n  s3aws:\n    bucket: [a]\n    region: r\n",
                "`storage.s3aws.bucket`",
            ),
            ("http:\n  addr: :5000\n", "`storage`"),
        ];
        for (text, key) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(
                err.starts_with("/etc/docker/registry/config.yml: "),
                "{err}"
            );
            assert!(err.contains(key), "{err} should name {key}");
        }
        let err = parse("storage: [\n").expect_err("yaml").to_string();
        assert!(err.contains("config.yml") && err.contains("YAML"), "{err}");
        let missing = S3Config::from_registry_config(Path::new("/nonexistent/config.yml"))
            .expect_err("missing file")
            .to_string();
        assert!(missing.contains("/nonexistent/config.yml"), "{missing}");
    }
}
