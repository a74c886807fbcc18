//! Content digests as Distribution stores them: `sha256:<64 lowercase hex>`.

use std::fmt;

/// A sha256 digest, kept as its 32 bytes (a path string per link would cost ten times more).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Parses the 64 lowercase hex characters Distribution uses as a directory name.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Self(out))
    }

    /// Parses `sha256:<hex>` (the content of a link file, or a descriptor's digest).
    pub fn parse(s: &str) -> Option<Self> {
        Self::from_hex(s.strip_prefix("sha256:")?)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 hex characters, as used in paths.
    pub fn hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 0xf)] as char);
        }
        s
    }

    /// The first 12 hex characters, for human output.
    pub fn short(&self) -> String {
        let mut hex = self.hex();
        hex.truncate(12);
        hex
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trips_hex() {
        let d = Digest::from_hex(HEX).expect("valid hex");
        assert_eq!(d.hex(), HEX);
        assert_eq!(d.to_string(), format!("sha256:{HEX}"));
        assert_eq!(Digest::parse(&format!("sha256:{HEX}")), Some(d));
        assert_eq!(d.short(), "0123456789ab");
    }

    #[test]
    fn rejects_what_distribution_would_not_write() {
        assert_eq!(Digest::from_hex(&HEX.to_uppercase()), None);
        assert_eq!(Digest::from_hex(&HEX[1..]), None);
        assert_eq!(Digest::from_hex(&format!("{HEX}0")), None);
        assert_eq!(Digest::parse(&format!("sha512:{HEX}")), None);
        assert_eq!(Digest::parse(HEX), None);
        assert_eq!(Digest::from_hex("zz"), None);
    }
}
