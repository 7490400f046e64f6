//! Parsers for the value syntaxes of the config file, and `${VAR}` interpolation.

use std::num::NonZeroU32;
use std::time::Duration;

use super::Rate;

/// `"250ms"`, `"30s"`, `"1h"`.
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("expected a duration like \"250ms\" or \"30s\", got {s:?}"))
}

/// `"N/s"`, `"N/m"`, `"N/h"` with N ≥ 1.
pub fn rate(s: &str) -> Result<Rate, String> {
    let err = || format!("expected N/s, N/m or N/h, got {s:?}");
    let (n, unit) = s.trim().split_once('/').ok_or_else(err)?;
    let count = n.trim().parse::<NonZeroU32>().map_err(|_| err())?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(err()),
    };
    Ok(Rate { count, per })
}

/// `"16MiB"`, `"64KiB"`, `"1000"`.
pub fn size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| format!("expected a size like \"16MiB\" or \"64KiB\", got {s:?}"))
}

/// Replaces every `${VAR}` with the variable's value. An unset variable is an error naming it.
/// `$${` is a literal `${`.
pub fn interpolate(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| "unterminated ${ in value".to_string())?;
            let name = &after[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid variable name {name:?} in ${{...}}"));
            }
            let value =
                env(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        assert_eq!(rate("20/s").unwrap().interval(), Duration::from_millis(50));
        assert_eq!(
            rate("10000/h").unwrap().interval(),
            Duration::from_millis(360)
        );
        assert_eq!(rate("6/m").unwrap().interval(), Duration::from_secs(10));
        for bad in ["fast", "0/s", "5/d", "/s", "5"] {
            assert!(
                rate(bad).unwrap_err().contains("expected N/s, N/m or N/h"),
                "{bad}"
            );
        }
    }

    #[test]
    fn parses_durations_and_sizes() {
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(duration("30s").unwrap(), Duration::from_secs(30));
        assert!(duration("soon").is_err());
        assert_eq!(size("16MiB").unwrap(), 16 * 1024 * 1024);
        assert_eq!(size("1000").unwrap(), 1000);
        assert!(size("big").is_err());
    }

    #[test]
    fn interpolates_variables() {
        let env = |k: &str| (k == "A").then(|| "x".to_string());
        assert_eq!(interpolate("a${A}b${A}", &env).unwrap(), "axbx");
        assert_eq!(interpolate("$${A} $5", &env).unwrap(), "${A} $5");
        assert_eq!(
            interpolate("${B}", &env).unwrap_err(),
            "environment variable B is not set"
        );
        assert!(interpolate("${A", &env).is_err());
    }
}
