//! `Manifest::parse` on arbitrary bytes, then everything a check reads from a manifest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regfsck_core::manifest::{Reference, Role};
use regfsck_core::{Digest, Manifest};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Manifest::parse(data) else {
        return;
    };
    let index = m.is_index();
    let children = m.children();
    assert!(index || children.is_empty(), "a non-index has children");
    for child in children {
        if let Some(d) = child.sha256() {
            let _ = d.short();
        }
        // What a report shows of a reference reads back as the same reference.
        let shown = child.digest.to_string();
        assert_eq!(Reference::parse(&shown), child.digest, "{shown} does not round-trip");
        assert_eq!(child.sha256().is_some(), child.digest.claims_sha256() && Digest::parse(&shown).is_some());
        if let Some(p) = &child.platform {
            let _ = p.to_string();
        }
    }
    assert_eq!(m.has_config(), m.references().any(|(role, _)| role == Role::Config));
    for (_, r) in m.references() {
        // Kept as 32 bytes exactly when well-formed, and shown as written either way.
        let shown = r.to_string();
        assert_eq!(Reference::parse(&shown), r, "{shown} does not round-trip");
    }
});
