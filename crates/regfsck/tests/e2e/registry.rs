//! Runs real Distribution registries (`docker-registry serve CONFIG`) on
//! 127.0.0.1 with filesystem storage, and its garbage collector.
//!
//! Every process is owned by a [`Registry`] whose `Drop` kills it by PID and
//! waits for it, so a failing assertion never leaves a registry behind.

use crate::http;
use crate::packages::Tools;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RegistrySpec {
    /// A name for logs and messages (`private`, `dockerhub`, …).
    pub name: String,
    /// `storage.filesystem.rootdirectory`.
    pub root: PathBuf,
    /// Where config.yml and the process log go (outside the data root).
    pub work: PathBuf,
    /// Pull-through cache of this upstream (`http://127.0.0.1:PORT`).
    pub proxy_remote: Option<String>,
}

pub struct Registry {
    pub spec: RegistrySpec,
    pub port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    tools: Tools,
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

fn config_yaml(spec: &RegistrySpec, port: u16) -> String {
    let mut y = format!(
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n\
         storage:\n\
         \x20 filesystem:\n    rootdirectory: {root}\n\
         \x20 delete:\n    enabled: true\n\
         \x20 cache:\n    blobdescriptor: inmemory\n\
         \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: regfsck-e2e-{name}\n\
         \x20 headers:\n    X-Content-Type-Options: [nosniff]\n",
        root = spec.root.display(),
        name = spec.name,
    );
    if let Some(remote) = &spec.proxy_remote {
        y.push_str(&format!("proxy:\n  remoteurl: {remote}\n"));
    }
    y
}

impl Registry {
    /// Writes the config and starts the registry; returns once `GET /v2/`
    /// answers 200.
    pub fn start(tools: &Tools, spec: RegistrySpec) -> Registry {
        std::fs::create_dir_all(&spec.root).expect("create registry root");
        std::fs::create_dir_all(&spec.work).expect("create registry work dir");
        let mut last_error = String::new();
        // A free port can be taken between probing and binding: retry.
        for _attempt in 0..3 {
            let port = free_port();
            let mut reg = Registry {
                config: spec.work.join("config.yml"),
                log: spec.work.join("registry.log"),
                spec: spec.clone(),
                port,
                child: None,
                tools: tools.clone(),
            };
            std::fs::write(&reg.config, config_yaml(&spec, port)).expect("write config.yml");
            match reg.spawn_and_wait() {
                Ok(()) => return reg,
                Err(e) => last_error = e,
            }
        }
        panic!("registry {} did not come up: {last_error}", spec.name);
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open registry log");
        let child = Command::new(&self.tools.registry)
            .arg("serve")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.tools.registry.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "exited early with {status}; log:\n{}",
                    self.log_text()
                ));
            }
            if let Ok(r) = http::get(&self.addr(), "/v2/")
                && r.status == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!("not ready after 30s; log:\n{}", self.log_text()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process (by its PID, through the owned `Child`) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops and starts the same registry (same config, same port): its
    /// in-memory blob-descriptor cache starts empty.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                // The old socket may linger for a moment.
                Err(e) if Instant::now() < deadline => {
                    eprintln!("e2e: restart of {} failed, retrying: {e}", self.spec.name);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("restart of registry {}: {e}", self.spec.name),
            }
        }
    }

    /// Runs the real `docker-registry garbage-collect [--delete-untagged]`
    /// on this registry's config, as a separate process; returns its output.
    pub fn garbage_collect(&self, delete_untagged: bool) -> String {
        let mut cmd = Command::new(&self.tools.registry);
        cmd.arg("garbage-collect");
        if delete_untagged {
            cmd.arg("--delete-untagged");
        }
        cmd.arg(&self.config).stdin(Stdio::null());
        let out = cmd.output().expect("run docker-registry garbage-collect");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(self.spec.work.join("gc.log"), &text).expect("write gc log");
        assert!(
            out.status.success(),
            "garbage-collect on {} failed ({}):\n{text}",
            self.spec.name,
            out.status
        );
        text
    }

    /// Runs `docker-registry garbage-collect ARGS CONFIG` (e.g. `--dry-run`,
    /// `--delete-untagged`) and returns whether it succeeded, and its output.
    pub fn try_garbage_collect(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(&self.tools.registry)
            .arg("garbage-collect")
            .args(args)
            .arg(&self.config)
            .stdin(Stdio::null())
            .output()
            .expect("run docker-registry garbage-collect");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let n = std::fs::read_dir(&self.spec.work).map_or(0, Iterator::count);
        std::fs::write(self.spec.work.join(format!("gc-{n}.log")), &text).expect("write gc log");
        (out.status.success(), text)
    }

    /// The storage root inside `rootdirectory`.
    pub fn v2(&self) -> PathBuf {
        v2_of(&self.spec.root)
    }
}

pub fn v2_of(root: &Path) -> PathBuf {
    root.join("docker/registry/v2")
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
