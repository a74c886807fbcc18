//! Where Distribution keeps things, as registry-relative `/`-separated paths.
//!
//! Every path the framework builds or accepts for removal goes through this module, so the
//! layout is written down once.

use crate::Digest;

/// The storage prefix below a registry's `rootdirectory`.
pub const V2: &str = "docker/registry/v2";
pub const REPOSITORIES: &str = "docker/registry/v2/repositories";
pub const BLOBS: &str = "docker/registry/v2/blobs/sha256";

/// Directory names that never start a repository name component.
pub const RESERVED: [&str; 3] = ["_layers", "_manifests", "_uploads"];

pub fn repository(repo: &str) -> String {
    format!("{REPOSITORIES}/{repo}")
}

pub fn blob_dir(d: &Digest) -> String {
    let hex = d.hex();
    format!("{BLOBS}/{}/{hex}", &hex[..2])
}

pub fn blob_data(d: &Digest) -> String {
    format!("{}/data", blob_dir(d))
}

pub fn layers_dir(repo: &str) -> String {
    format!("{REPOSITORIES}/{repo}/_layers/sha256")
}

pub fn layer_link_dir(repo: &str, d: &Digest) -> String {
    format!("{}/{}", layers_dir(repo), d.hex())
}

pub fn layer_link(repo: &str, d: &Digest) -> String {
    format!("{}/link", layer_link_dir(repo, d))
}

pub fn revisions_dir(repo: &str) -> String {
    format!("{REPOSITORIES}/{repo}/_manifests/revisions/sha256")
}

pub fn revision_link(repo: &str, d: &Digest) -> String {
    format!("{}/{}/link", revisions_dir(repo), d.hex())
}

pub fn tags_dir(repo: &str) -> String {
    format!("{REPOSITORIES}/{repo}/_manifests/tags")
}

pub fn tag_current_link(repo: &str, tag: &str) -> String {
    format!("{}/{tag}/current/link", tags_dir(repo))
}

pub fn tag_index_link(repo: &str, tag: &str, d: &Digest) -> String {
    format!("{}/{tag}/index/sha256/{}/link", tags_dir(repo), d.hex())
}

pub fn uploads_dir(repo: &str) -> String {
    format!("{REPOSITORIES}/{repo}/_uploads")
}

/// What kind of directory a fix may remove, recognised from its path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removable {
    /// `repositories/<repo>/_layers/sha256/<hex>`
    LayerLink,
    /// `repositories/<repo>/_uploads/<id>`
    Upload,
}

/// Says whether `path` has the exact shape of a directory regfsck may remove.
///
/// The shape is checked component by component: no empty, `.` or `..` component, a
/// repository name whose components do not start with `_`, and a final component of the
/// kind the layout expects there.
pub fn removable(path: &str) -> Option<Removable> {
    let rest = path.strip_prefix(REPOSITORIES)?.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\\'))
    {
        return None;
    }
    let (kind, repo_len) = match parts.as_slice() {
        [repo @ .., "_layers", "sha256", hex] if Digest::from_hex(hex).is_some() => {
            (Removable::LayerLink, repo.len())
        }
        [repo @ .., "_uploads", id] if !id.starts_with('_') => (Removable::Upload, repo.len()),
        _ => return None,
    };
    let repo = &parts[..repo_len];
    if repo.is_empty() || repo.iter().any(|p| p.starts_with('_')) {
        return None;
    }
    Some(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn builds_distribution_paths() {
        let d = Digest::from_hex(HEX).expect("hex");
        assert_eq!(
            blob_data(&d),
            format!("docker/registry/v2/blobs/sha256/01/{HEX}/data")
        );
        assert_eq!(
            layer_link("team/app", &d),
            format!("docker/registry/v2/repositories/team/app/_layers/sha256/{HEX}/link")
        );
        assert_eq!(
            revision_link("a", &d),
            format!("docker/registry/v2/repositories/a/_manifests/revisions/sha256/{HEX}/link")
        );
    }

    #[test]
    fn removable_accepts_only_the_layout() {
        let ok = format!("{REPOSITORIES}/team/app/_layers/sha256/{HEX}");
        assert_eq!(removable(&ok), Some(Removable::LayerLink));
        assert_eq!(
            removable(&format!("{REPOSITORIES}/a/_uploads/6f1c")),
            Some(Removable::Upload)
        );
        for bad in [
            format!("{REPOSITORIES}/_layers/sha256/{HEX}"),
            format!("{REPOSITORIES}/team/../_layers/sha256/{HEX}"),
            format!("{REPOSITORIES}/team//_layers/sha256/{HEX}"),
            format!("{REPOSITORIES}/team/_x/_layers/sha256/{HEX}"),
            format!("{REPOSITORIES}/team/_layers/sha256/{HEX}/link"),
            format!("{REPOSITORIES}/team/_layers/sha256/not-a-digest"),
            format!("{REPOSITORIES}/team/_manifests/revisions/sha256/{HEX}"),
            format!("{BLOBS}/01/{HEX}"),
            format!("/{REPOSITORIES}/team/_layers/sha256/{HEX}"),
            String::new(),
        ] {
            assert_eq!(removable(&bad), None, "{bad}");
        }
    }
}
