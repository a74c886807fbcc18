//! `PolicyFile::parse` on arbitrary UTF-8 text, and the miette rendering of its errors
//! (spans past the end of the text or inside a multi-byte character would panic there).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use miette::{GraphicalReportHandler, GraphicalTheme};
use regfsck_core::policy::PolicyFile;

// The validator looks check ids up through `inventory`: link the built-in checks.
use orphan_index_children as _;
use orphan_layer_links as _;

fuzz_target!(init: {
    // Without the checks linked in, every check id is "unknown" and the level paths go unfuzzed.
    for id in ["orphan-layer-links", "orphan-index-children"] {
        assert!(regfsck_core::check::find(id).is_some(), "check `{id}` is not linked in");
    }
}, |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match PolicyFile::parse(Path::new("policy.toml"), text, Some("daily")) {
        Ok(file) => {
            assert!(file.policies.contains_key("daily"));
            for p in file.policies.values() {
                for r in p.named_registries() {
                    let _ = p.level(r, "orphan-layer-links");
                }
            }
        }
        Err(err) => {
            for p in &err.problems {
                if let Some(s) = p.span {
                    assert!(
                        s.offset() + s.len() <= text.len(),
                        "span {s:?} past the end ({} bytes)",
                        text.len()
                    );
                }
            }
            // The CLI's rendering: the default (graphical, "fancy") hook.
            let report = miette::Report::new(err);
            let rendered = format!("{report:?}");
            assert!(!rendered.is_empty());
            // Unicode theme at a narrow width: wrapping and wide characters in labels.
            let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
                .with_width(40);
            let mut out = String::new();
            handler
                .render_report(&mut out, report.as_ref())
                .expect("rendering into a String does not fail");
        }
    }
});
