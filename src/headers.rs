//! Header-map helpers shared by the layers that set a header on a request on its way.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Sets `name` to `value` alone, as `HeaderMap::insert` does, without growing a map that has no
/// room to spare (sized exactly by the listener, or the retry loop's copy): `insert` first makes
/// room for a new entry even when it only replaces one, so in a full map a single value already
/// there is replaced in place instead. Several values, or none, still go through `insert`, which
/// removes them all.
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
}
