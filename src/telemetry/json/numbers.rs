//! Numbers in the JSON line: the timestamp (its date and time of day formatted once per
//! second), the latency and other floats, as `tracing-subscriber` and `serde_json` write them.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{Datelike, Timelike};

use super::Line;

/// As `serde_json` writes an `f64` (it uses `zmij` too): `null` when not finite.
pub(super) fn write_f64(out: &mut impl Line, value: f64) {
    if value.is_finite() {
        out.push_str(zmij::Buffer::new().format_finite(value));
    } else {
        out.push_str("null");
    }
}

/// `ms` as [`write_f64`] writes it. A latency is usually the double nearest to a whole number
/// of nanoseconds (`front` measures a `Duration`); then those digits are the shortest that read
/// back as `ms`, and writing them is cheaper than `zmij`'s general search.
pub(super) fn write_millis(out: &mut Vec<u8>, ms: f64) {
    let Some(nanos) = whole_nanos(ms) else {
        return write_f64(out, ms);
    };
    out.extend_from_slice(itoa::Buffer::new().format(nanos / 1_000_000).as_bytes());
    let mut fraction = *b".000000";
    fraction[1..].copy_from_slice(&six_digits(nanos % 1_000_000));
    // At least one digit after the point, as `zmij` writes `1.0`.
    let end = fraction[2..]
        .iter()
        .rposition(|&d| d != b'0')
        .map_or(2, |last| last + 3);
    out.extend_from_slice(&fraction[..end]);
}

/// The number of nanoseconds `ms` is the nearest double to, if there is one. Division of two
/// exact doubles rounds correctly, so the test is exact; below 1e9 ms a double's spacing is far
/// under a nanosecond, so no shorter decimal reads back as `ms` either. From 1e-3 ms (below it,
/// `zmij` may switch to an exponent).
fn whole_nanos(ms: f64) -> Option<u64> {
    if !(1e-3..1e9).contains(&ms) {
        return None;
    }
    let nanos = (ms * 1e6).round() as u64;
    (nanos as f64 / 1e6 == ms).then_some(nanos)
}

thread_local! {
    /// The last second formatted, and its `YYYY-MM-DDTHH:MM:SS` text: one date computation
    /// per second and thread instead of one per line.
    static SECOND: Cell<(i64, [u8; 19])> = const { Cell::new((i64::MIN, [0; 19])) };
}

/// RFC 3339 in UTC with microseconds, as `tracing-subscriber`'s `SystemTime` timer writes it.
pub(super) fn write_timestamp(out: &mut impl Line, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        text = second_text(secs);
        SECOND.set((secs, text));
    }
    let mut micros = *b".000000Z";
    micros[1..7].copy_from_slice(&six_digits(since.subsec_micros().into()));
    out.push_ascii(&text);
    out.push_ascii(&micros);
}

/// `value` (below a million) in six digits with leading zeros: `itoa` writes two digits a step,
/// and a leading 1 pads it to a fixed length.
fn six_digits(value: u64) -> [u8; 6] {
    let mut digits = [b'0'; 6];
    let mut buffer = itoa::Buffer::new();
    let padded = buffer.format(value % 1_000_000 + 1_000_000).as_bytes();
    digits.copy_from_slice(&padded[1..]);
    digits
}

fn second_text(secs: i64) -> [u8; 19] {
    let mut text = *b"1970-01-01T00:00:00";
    let Some(t) = chrono::DateTime::from_timestamp(secs, 0) else {
        return text;
    };
    let year = u32::try_from(t.year()).unwrap_or(0).min(9999);
    let parts = [
        (0, 4, year),
        (5, 2, t.month()),
        (8, 2, t.day()),
        (11, 2, t.hour()),
        (14, 2, t.minute()),
        (17, 2, t.second()),
    ];
    for (at, width, mut value) in parts {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::json::tests::render;
    use std::time::Duration;

    #[test]
    fn timestamps_match_rfc3339_with_microseconds() {
        let t = UNIX_EPOCH + Duration::new(1_764_120_785, 417_032_999);
        assert_eq!(
            render(|w| write_timestamp(w, t)),
            "2025-11-26T01:33:05.417032Z"
        );
        let epoch = render(|w| write_timestamp(w, UNIX_EPOCH));
        assert_eq!(epoch, "1970-01-01T00:00:00.000000Z");
    }

    /// The timestamp as `chrono` writes RFC 3339 with microseconds, for comparison.
    fn reference(t: SystemTime) -> String {
        chrono::DateTime::<chrono::Utc>::from(t)
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }

    /// Formats each time in turn on one thread (one cache), checking every line.
    fn check_in_order(times: &[SystemTime]) {
        for &t in times {
            assert_eq!(render(|w| write_timestamp(w, t)), reference(t), "{t:?}");
        }
    }

    #[test]
    fn cached_second_serves_later_lines_in_the_same_second() {
        let second = UNIX_EPOCH + Duration::from_secs(1_764_120_785);
        check_in_order(&[
            second + Duration::from_micros(1),
            second + Duration::from_micros(500_000),
            second,
        ]);
    }

    #[test]
    fn cache_moves_on_to_the_next_second_and_across_midnight_and_years() {
        let last = UNIX_EPOCH + Duration::new(1_767_225_599, 999_999_999); // 2025-12-31T23:59:59
        check_in_order(&[
            last - Duration::from_secs(1),
            last,
            last + Duration::from_nanos(1),
            last + Duration::from_secs(1),
            last + Duration::from_secs(86_400 * 59), // 2026-02-28T23:59:59
            last + Duration::from_secs(86_400 * 59 + 1),
        ]);
    }

    #[test]
    fn cache_follows_the_wall_clock_stepping_back() {
        let t = UNIX_EPOCH + Duration::new(1_764_120_785, 417_032_000);
        check_in_order(&[
            t,
            t - Duration::from_millis(1),
            t - Duration::from_millis(500),
            t - Duration::from_secs(3_600),
            t,
        ]);
    }

    #[test]
    fn floats_are_written_like_serde_json() {
        // Exponents too: `ryu` writes 1e16 where `serde_json` writes 1e+16.
        for v in [0.680922, 1.0, 0.0, 12.5, 1234.0625, 1e-7, 1.5e16, -2.5e300] {
            let ours = render(|w| write_f64(w, v));
            assert_eq!(ours, serde_json::to_string(&v).unwrap(), "{v}");
        }
        assert_eq!(render(|w| write_f64(w, f64::NAN)), "null");
    }

    fn millis(ms: f64) -> String {
        let mut out = Vec::new();
        write_millis(&mut out, ms);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn latencies_are_written_like_any_float() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut whole = 0;
        for i in 0..200_000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Durations as `front` makes them, across magnitudes from 1 µs to hours.
            let nanos = (seed >> 20) >> (i % 40);
            let ms = Duration::from_nanos(nanos).as_secs_f64() * 1000.0;
            whole += usize::from(whole_nanos(ms).is_some());
            assert_eq!(millis(ms), render(|w| write_f64(w, ms)), "{nanos} ns");
        }
        // The shortcut is taken for most of them, so the comparison above covers it.
        assert!(whole > 100_000, "{whole}");
        for ms in [
            0.001,
            0.0015,
            1.0,
            1.5,
            10.0,
            0.1,
            999_999_999.999_999,
            1e9,
            0.0,
            1e-7,
        ] {
            assert_eq!(millis(ms), render(|w| write_f64(w, ms)), "{ms}");
        }
        assert_eq!(millis(f64::INFINITY), "null");
    }
}
