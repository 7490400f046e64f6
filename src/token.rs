//! HTTP header names as both HTTP/1.1 parsers (the listener's and the upstream client's) compare
//! them against the names they know, before building an `http::HeaderName`.

/// Whether a header name httparse accepted (token characters only) is `lower`, in any case.
/// For a token character `b | 0x20` is its lower case when it is a letter and `b` otherwise:
/// no other token character becomes a lower-case letter, a digit or `-` that way.
/// Compared eight bytes at a time: `lower` (lower case, digits, `-`) has 0x20 set in every
/// byte, so OR-ing it in on both sides changes nothing on its side.
pub(crate) fn same_token(bytes: &[u8], lower: &[u8]) -> bool {
    const CASE: u64 = 0x2020_2020_2020_2020;
    bytes.len() == lower.len()
        && bytes
            .chunks(8)
            .zip(lower.chunks(8))
            .all(|(b, l)| word(b) | CASE == word(l) | CASE)
}

/// Up to eight bytes as one little-endian word, zero-padded.
fn word(chunk: &[u8]) -> u64 {
    match <[u8; 8]>::try_from(chunk) {
        Ok(full) => u64::from_le_bytes(full),
        Err(_) => chunk.iter().rev().fold(0, |w, &b| (w << 8) | u64::from(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_any_case_and_only_the_same_name() {
        let name = b"transfer-encoding-x1";
        for len in 1..=name.len() {
            let lower = &name[..len];
            let upper = lower.to_ascii_uppercase();
            assert!(same_token(lower, lower));
            assert!(same_token(&upper, lower), "{len}");
            for at in 0..len {
                let mut other = upper.clone();
                other[at] = b'^';
                assert!(!same_token(&other, lower), "^ at {at} of {len}");
            }
            assert!(!same_token(&upper[..len - 1], lower));
        }
    }
}
