//! `Idenfy-Signature`: lowercase hex of HMAC-SHA256 over the raw body (idenfy-api.md §6). Checked
//! in constant time on the way in (the account's key), recomputed on the way out (the team's key).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header iDenfy signs with, and the gateway re-signs with.
pub const IDENFY_SIGNATURE: &str = "idenfy-signature";

/// Lowercase hex HMAC-SHA256 of `body` under `key`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Does `header` (hex, either case, surrounding spaces ignored) carry the HMAC of `body` under
/// `key`? The comparison takes the same time wherever the first difference is (`hmac`'s
/// `verify_slice`, built on `subtle`).
pub fn verify(key: &[u8], body: &[u8], header: &[u8]) -> bool {
    let Ok(given) = hex::decode(header.trim_ascii()) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_rfc_4231_and_verifies_its_own() {
        let sig = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify(
            b"Jefe",
            b"what do ya want for nothing?",
            sig.as_bytes()
        ));
        assert!(verify(
            b"Jefe",
            b"what do ya want for nothing?",
            sig.to_uppercase().as_bytes()
        ));
        assert_eq!(
            sig,
            crate::simulator::sign(b"Jefe", b"what do ya want for nothing?")
        );
    }

    #[test]
    fn refuses_another_key_body_or_a_malformed_header() {
        let sig = sign(b"key", b"body");
        assert!(!verify(b"other", b"body", sig.as_bytes()));
        assert!(!verify(b"key", b"body ", sig.as_bytes()));
        assert!(!verify(b"key", b"body", &sig.as_bytes()[..62]));
        assert!(!verify(b"key", b"body", b"zz"));
        assert!(!verify(b"key", b"body", b""));
    }
}
