//! `Manifest::parse` on arbitrary bytes, then everything a check reads from a manifest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regfsck_core::Manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Manifest::parse(data) else {
        return;
    };
    let index = m.is_index();
    let children = m.children();
    assert!(index || children.is_empty(), "a non-index has children");
    for child in children {
        if let Some(d) = child.sha256() {
            assert_eq!(d.to_string(), child.digest, "sha256() accepted a non-canonical digest");
            let _ = d.short();
        }
        if let Some(p) = &child.platform {
            let _ = p.to_string();
        }
    }
    if let Some(c) = &m.config {
        let _ = c.sha256();
    }
    for l in m.layers.iter().flatten() {
        let _ = l.sha256();
    }
});
