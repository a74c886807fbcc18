//! Makes sure the real tools are on the machine: Debian's `docker-registry`
//! (CNCF Distribution 2.8.2) and `skopeo`. When one is missing we install it
//! with apt-get (CI runs as root on a fresh machine). When that fails the test
//! fails, loudly: this suite never skips silently.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";

#[derive(Debug, Clone)]
pub struct Tools {
    pub registry: PathBuf,
    pub skopeo: PathBuf,
    pub registry_version: String,
    pub skopeo_version: String,
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{cmd:?} failed ({}):\n{text}", out.status))
    }
}

fn apt_install(packages: &[&str]) -> Result<(), String> {
    eprintln!("e2e: installing {packages:?} with apt-get");
    let apt = |args: &[&str]| {
        let mut c = Command::new("apt-get");
        c.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(std::process::Stdio::null());
        run(&mut c)
    };
    apt(&["update"])?;
    let mut args = vec!["install", "-y"];
    args.extend_from_slice(packages);
    apt(&args)?;
    Ok(())
}

fn install() -> Result<Tools, String> {
    let mut missing = Vec::new();
    if !Path::new(DOCKER_REGISTRY).is_file() {
        missing.push("docker-registry");
    }
    if find_in_path("skopeo").is_none() {
        missing.push("skopeo");
    }
    if !missing.is_empty() {
        apt_install(&missing).map_err(|e| {
            format!(
                "the e2e suite needs {missing:?} and could not install them with \
                 `apt-get update && apt-get install -y {}` (are we root on Debian?):\n{e}",
                missing.join(" ")
            )
        })?;
    }
    let registry = PathBuf::from(DOCKER_REGISTRY);
    if !registry.is_file() {
        return Err(format!(
            "{DOCKER_REGISTRY} is still missing after installing docker-registry"
        ));
    }
    let skopeo =
        find_in_path("skopeo").ok_or("skopeo is still missing after installing it".to_string())?;
    let registry_version = run(Command::new(&registry).arg("--version"))?
        .trim()
        .to_string();
    let skopeo_version = run(Command::new(&skopeo).arg("--version"))?
        .trim()
        .to_string();
    // The scenario asserts what Distribution 2.8's garbage collector really
    // does (it orphans children of tagged indexes); another version would
    // make different (or no) breakage, so say so instead of failing obscurely.
    if !registry_version.contains(" 2.8.") && !registry_version.contains(" v2.8.") {
        return Err(format!(
            "the e2e scenario is written against Distribution 2.8.x, found {registry_version:?}"
        ));
    }
    Ok(Tools {
        registry,
        skopeo,
        registry_version,
        skopeo_version,
    })
}

/// Installs (once per test binary) and returns the tools, or panics with the
/// reason. Never skips.
pub fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Result<Tools, String>> = OnceLock::new();
    match TOOLS.get_or_init(install) {
        Ok(t) => t,
        Err(e) => panic!("e2e prerequisites: {e}"),
    }
}
