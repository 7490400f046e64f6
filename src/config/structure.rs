//! The file's structure checked whole: every unknown key and every value of the wrong type, not
//! only the first one. serde stops at its first error, so the key it names is recorded, taken out
//! of the document (its default applies), and the document read again, until it reads.
//!
//! A key taken out this way is "wrong": `validate` problems about it are dropped by the caller,
//! since they would be about the default standing in for it, not about the file.

use super::load::Problems;
use super::raw::RawConfig;

/// The raw config, or `None` when the file cannot be read into it even without its wrong keys
/// (a required key missing); and the paths of the keys found wrong and of those taken out.
pub(super) fn deserialize(
    mut doc: toml::Value,
    p: &mut Problems,
) -> (Option<RawConfig>, Vec<String>) {
    let mut wrong: Vec<String> = Vec::new();
    loop {
        let error = match serde_path_to_error::deserialize::<_, RawConfig>(doc.clone()) {
            Ok(raw) => return (Some(raw), wrong),
            Err(error) => error,
        };
        let message = error.inner().message().to_string();
        let path = offending_key(&error.path().to_string(), &message);
        let repeated = wrong.contains(&path);
        if !repeated {
            p.add(path.clone(), readable(&message));
        }
        let removed = match message.starts_with("missing field") || repeated {
            true => None,
            false => remove(&mut doc, &path),
        };
        let Some(removed) = removed else {
            return (None, wrong);
        };
        if removed != path {
            wrong.push(removed);
        }
        wrong.push(path);
    }
}

/// The key an error is about (serde_path_to_error's path ends with an unknown key's name; the
/// name is appended in case it does not).
fn offending_key(path: &str, message: &str) -> String {
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next());
    match (path, unknown) {
        (".", Some(key)) => key.to_string(),
        (path, Some(key)) if path != key && !path.ends_with(&format!(".{key}")) => {
            format!("{path}.{key}")
        }
        (path, _) => path.to_string(),
    }
}

/// serde's wording, without the names of the gateway's own types.
fn readable(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("struct Raw") {
        out.push_str(&rest[..i]);
        out.push_str("a table");
        rest = rest[i + "struct Raw".len()..].trim_start_matches(|c: char| c.is_alphanumeric());
    }
    out.push_str(rest);
    out
}

/// Removes the key at `path` (`team[1].rate`, `limits.max_wiat`) and returns its path. An
/// element of an array (`routes.prefixes[2]`) takes its whole array with it: removing the element
/// alone would renumber the others (the array's default applies, its elements go unchecked).
fn remove(doc: &mut toml::Value, path: &str) -> Option<String> {
    let mut target = path;
    while let Some(stripped) = target.strip_suffix(']') {
        target = &stripped[..stripped.rfind('[')?];
    }
    let (parent, key) = match target.rfind('.') {
        Some(cut) => (&target[..cut], &target[cut + 1..]),
        None => ("", target),
    };
    let table = lookup(doc, parent)?.as_table_mut()?;
    table.remove(key).map(|_| target.to_string())
}

fn lookup<'a>(doc: &'a mut toml::Value, path: &str) -> Option<&'a mut toml::Value> {
    let mut value = doc;
    for segment in segments(path) {
        value = match segment {
            Segment::Key(key) => value.as_table_mut()?.get_mut(key)?,
            Segment::Index(i) => value.as_array_mut()?.get_mut(i)?,
        };
    }
    Some(value)
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `team[1].rate` → `team`, `1`, `rate`.
fn segments(path: &str) -> impl Iterator<Item = Segment<'_>> {
    path.split('.').filter(|s| !s.is_empty()).flat_map(|part| {
        let mut pieces = part.split('[');
        let key = pieces.next().filter(|k| !k.is_empty()).map(Segment::Key);
        let indexes =
            pieces.filter_map(|i| i.trim_end_matches(']').parse().ok().map(Segment::Index));
        key.into_iter().chain(indexes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> (Vec<String>, bool) {
        let doc: toml::Value = toml::from_str(text).unwrap();
        let mut p = Problems::default();
        let (raw, _) = deserialize(doc, &mut p);
        let lines =
            p.0.iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect();
        (lines, raw.is_some())
    }

    #[test]
    fn reports_every_unknown_key_and_wrong_type() {
        let (lines, read) = problems(
            "bogus = 1\n[listen]\nproxx = \"a\"\nmax_connections = \"many\"\n[limits]\nmax_wiat = \"2s\"\n\
             [[team]]\nname = \"a\"\nburst = \"x\"\n[[team]]\nname = \"b\"\ncolour = \"red\"\n",
        );
        assert!(read, "{lines:?}");
        let paths: Vec<&str> = lines.iter().map(|l| l.split(':').next().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "bogus",
                "listen.proxx",
                "listen.max_connections",
                "limits.max_wiat",
                "team[0].burst",
                "team[1].colour"
            ],
            "{lines:?}"
        );
        assert!(lines[1].contains("unknown field `proxx`"), "{lines:?}");
        assert!(
            lines[2].contains("invalid type: string \"many\""),
            "{lines:?}"
        );
    }

    #[test]
    fn a_section_of_the_wrong_shape_is_reported_without_naming_internal_types() {
        let (lines, read) = problems("listen = 5\n");
        assert!(read);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("listen: invalid type: integer `5`, expected a table"),
            "{lines:?}"
        );
    }
}
