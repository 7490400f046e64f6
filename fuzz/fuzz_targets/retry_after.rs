//! `Retry-After`, as the retry loop and the account pause read an upstream answer: any header
//! value, read at any wall-clock time, gives a wait of at most `MAX_RETRY_AFTER`, delta-seconds
//! are read as given, and a later clock never gives a longer wait.
#![no_main]

use std::time::{Duration, SystemTime};

use http::HeaderValue;
use idenfy_gateway::fuzzing::retry_after::{parse_retry_after, MAX_RETRY_AFTER};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((clock, text)) = data.split_first_chunk::<4>() else {
        return;
    };
    let Ok(value) = HeaderValue::from_bytes(text) else {
        return;
    };
    // Any second from 1970 to 2106.
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::from_le_bytes(*clock)));
    let wait = parse_retry_after(&value, now);
    if let Some(wait) = wait {
        assert!(wait <= MAX_RETRY_AFTER, "{wait:?}");
    }
    let trimmed = value.to_str().map(str::trim).unwrap_or_default();
    if let Ok(secs) = trimmed.parse::<u64>() {
        assert_eq!(wait, Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER)));
    }
    let later = parse_retry_after(&value, now + Duration::from_secs(1));
    assert_eq!(later.is_some(), wait.is_some());
    assert!(
        later <= wait,
        "a later clock waits longer: {wait:?} then {later:?}"
    );
});
