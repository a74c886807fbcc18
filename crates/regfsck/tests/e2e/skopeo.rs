//! skopeo as the client: pushes the built OCI layouts to a registry and pulls
//! images back (directly or through a pull-through cache).

use crate::packages::Tools;
use std::path::Path;
use std::process::{Command, Output, Stdio};

pub struct Skopeo {
    tools: Tools,
    /// A scratch directory for skopeo's temporary files.
    tmp: std::path::PathBuf,
}

#[derive(Debug, Default, Clone)]
pub struct CopyOpts<'a> {
    /// `--all`: every image of an index.
    pub all: bool,
    /// `--preserve-digests`: fail rather than change a manifest.
    pub preserve_digests: bool,
    /// `--override-arch` / `--override-variant`: which instance of an index
    /// to copy when not `all`.
    pub arch: Option<&'a str>,
    pub variant: Option<&'a str>,
}

impl Skopeo {
    pub fn new(tools: &Tools, tmp: &Path) -> Self {
        std::fs::create_dir_all(tmp).expect("skopeo tmp dir");
        Self {
            tools: tools.clone(),
            tmp: tmp.to_path_buf(),
        }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.tools.skopeo);
        // No signature policy on these throwaway local registries.
        c.arg("--insecure-policy")
            .arg("--tmpdir")
            .arg(&self.tmp)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, mut c: Command) -> Output {
        c.output()
            .unwrap_or_else(|e| panic!("cannot run skopeo {c:?}: {e}"))
    }

    /// `skopeo copy` between two references; returns the process output
    /// (callers decide whether failure is expected).
    pub fn try_copy(&self, src: &str, dst: &str, opts: &CopyOpts<'_>) -> Output {
        let mut c = self.command();
        if let Some(a) = opts.arch {
            c.arg("--override-arch").arg(a);
        }
        if let Some(v) = opts.variant {
            c.arg("--override-variant").arg(v);
        }
        c.arg("--override-os").arg("linux");
        c.arg("copy")
            .arg("--retry-times=0")
            .arg("--src-tls-verify=false")
            .arg("--dest-tls-verify=false");
        if opts.all {
            c.arg("--all");
        }
        if opts.preserve_digests {
            c.arg("--preserve-digests");
        }
        c.arg(src).arg(dst);
        self.run(c)
    }

    pub fn copy(&self, src: &str, dst: &str, opts: &CopyOpts<'_>) {
        let out = self.try_copy(src, dst, opts);
        assert!(
            out.status.success(),
            "skopeo copy {src} {dst} ({opts:?}) failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `skopeo inspect --raw`: the manifest bytes exactly as served.
    pub fn inspect_raw(&self, reference: &str) -> Vec<u8> {
        let mut c = self.command();
        c.arg("inspect")
            .arg("--retry-times=0")
            .arg("--tls-verify=false")
            .arg("--raw")
            .arg(reference);
        let out = self.run(c);
        assert!(
            out.status.success(),
            "skopeo inspect --raw {reference} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}
