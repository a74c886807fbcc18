//! `Digest::from_hex` and `Digest::parse` on arbitrary strings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regfsck_core::Digest;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(d) = Digest::from_hex(s) {
        assert_eq!(d.hex(), s, "from_hex accepted a non-canonical spelling");
        assert_eq!(Digest::from_bytes(*d.as_bytes()), d);
        assert_eq!(d.short(), s[..12]);
    }
    if let Some(d) = Digest::parse(s) {
        assert_eq!(d.to_string(), s, "parse accepted a non-canonical spelling");
        assert_eq!(Digest::from_hex(&d.hex()), Some(d));
    }
});
