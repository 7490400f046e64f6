//! Header-map helpers shared by the layers that set a header on a request on its way.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Sets `name` to `value` alone. A single value already there is replaced in place:
/// `HeaderMap::insert` first makes room for a new entry even when it only replaces one, so in a
/// map with no room to spare (sized exactly by the listener, or a copy made by the retry loop)
/// it would reallocate and rehash the map. Several values, or none, go through `insert`, which
/// removes them all.
pub fn set_single(headers: &mut HeaderMap, name: HeaderName, value: HeaderValue) {
    let present = headers.get_all(&name).iter().count();
    match headers.get_mut(&name) {
        Some(slot) if present == 1 => *slot = value,
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
