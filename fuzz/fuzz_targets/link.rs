//! `scan::parse_link` on arbitrary bytes: never panics, and what it accepts round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regfsck_core::Digest;
use regfsck_core::scan::parse_link;

fuzz_target!(|data: &[u8]| {
    match parse_link(data) {
        Ok(d) => {
            let shown = format!("{d}");
            assert_eq!(Digest::parse(&shown), Some(d), "{shown} does not round-trip");
            // A link holds exactly the canonical form, optionally newline-terminated.
            let text = std::str::from_utf8(data).expect("accepted a non-UTF-8 link");
            assert_eq!(text.strip_suffix('\n').unwrap_or(text), shown);
        }
        Err(msg) => assert!(!msg.is_empty()),
    }
});
