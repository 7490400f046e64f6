//! Header-map edits made at a hop: hop-by-hop headers removed (a request as it comes in, an
//! answer as it comes back), and a header set on a request on its way.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Sets `name` to `value` alone, as `HeaderMap::insert` does, without growing a map that has no
/// room to spare (the listener sizes it exactly): `insert` first makes room for a new entry even
/// when it only replaces one, so in a full map a single value already there is replaced in place
/// instead. Several values, or none, still go through `insert`, which removes them all.
pub fn set_single(headers: &mut HeaderMap, name: HeaderName, value: HeaderValue) {
    if headers.keys_len() < headers.capacity() {
        headers.insert(name, value);
        return;
    }
    let mut present = headers.get_all(&name).iter();
    let single = present.next().is_some() && present.next().is_none();
    match headers.get_mut(&name) {
        Some(slot) if single => *slot = value,
        _ => {
            headers.insert(name, value);
        }
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded in either direction.
const HOP_BY_HOP: [header::HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
/// Not standard names: compared as names (a standard name differs at once), not as strings
/// (which spells out every name met). Constants, as `HOP_BY_HOP`: the comparisons fold.
const KEEP_ALIVE: header::HeaderName = header::HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: header::HeaderName = header::HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers, and every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present, with no hashing and no allocation, noting which of them
    // are hop-by-hop; then only those are removed (most messages carry none, or only
    // `Connection: keep-alive`).
    let mut present = 0u32;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        } else if *name == KEEP_ALIVE {
            present |= KEEP_ALIVE_BIT;
        } else if *name == PROXY_CONNECTION {
            present |= PROXY_CONNECTION_BIT;
        }
    }
    if present == 0 {
        return;
    }
    if present & CONNECTION_BIT != 0 {
        remove_connection_named(headers);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if present & KEEP_ALIVE_BIT != 0 {
        headers.remove(KEEP_ALIVE);
    }
    if present & PROXY_CONNECTION_BIT != 0 {
        headers.remove(PROXY_CONNECTION);
    }
}

/// `Connection` is `HOP_BY_HOP[0]`; the two non-standard names take the top bits.
const CONNECTION_BIT: u32 = 1 << 0;
const KEEP_ALIVE_BIT: u32 = 1 << 30;
const PROXY_CONNECTION_BIT: u32 = 1 << 31;

/// Removes the headers `Connection` names, other than the options every message may carry
/// (`close`, `keep-alive`), which cost nothing to skip.
fn remove_connection_named(headers: &mut HeaderMap) {
    let named: Vec<header::HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|name| header::HeaderName::try_from(name).ok())
        .collect();
    for name in &named {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{AUTHORIZATION, HOST};

    /// A map with no room to spare, holding `authorization: a` among its entries.
    fn full_map() -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(6);
        for i in 0..headers.capacity() - 1 {
            let name = HeaderName::try_from(format!("x-{i}")).unwrap();
            headers.insert(name, HeaderValue::from_static("v"));
        }
        headers.insert(AUTHORIZATION, HeaderValue::from_static("a"));
        assert_eq!(headers.len(), headers.capacity());
        headers
    }

    #[test]
    fn replaces_a_single_value_without_growing_a_full_map() {
        let mut headers = full_map();
        let capacity = headers.capacity();
        set_single(&mut headers, AUTHORIZATION, HeaderValue::from_static("b"));
        assert_eq!(headers[AUTHORIZATION], "b");
        assert_eq!(headers.capacity(), capacity);
    }

    #[test]
    fn leaves_one_value_where_there_were_several_or_none() {
        let mut headers = full_map();
        headers.append(AUTHORIZATION, HeaderValue::from_static("a2"));
        set_single(&mut headers, AUTHORIZATION, HeaderValue::from_static("b"));
        let values: Vec<_> = headers.get_all(AUTHORIZATION).iter().collect();
        assert_eq!(values, ["b"]);
        set_single(&mut headers, HOST, HeaderValue::from_static("h"));
        assert_eq!(headers[HOST], "h");
    }

    #[test]
    fn connection_is_the_first_hop_by_hop_header() {
        assert_eq!(HOP_BY_HOP[0], header::CONNECTION);
        assert!(HOP_BY_HOP.len() < 30);
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic eA=="),
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::CONTENT_TYPE));
    }
}
