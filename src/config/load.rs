//! Loading: read the file, interpolate `${VAR}`, deserialize, then `validate` into typed values.
//! Every problem is collected with its key path and its line, so an operator fixes them all in
//! one go; each says whether the file is wrong or this machine lacks something the file names.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::locate::Locations;
use super::ranges::Range;
use super::raw::RawConfig;
use super::values;
use super::Config;

/// One problem in a config file: where, what, and whether the file or this machine is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
    pub kind: ProblemKind,
    /// Line and column (from 1) of the key in the file, when the file has it.
    pub location: Option<(u32, u32)>,
}

/// Whose fault a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The file is wrong (`check-config` exits 64).
    File,
    /// The file is right, but this machine lacks something it names: an environment variable, a
    /// secret file, a CA file (`check-config --offline` does not look for them).
    Environment,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)?;
        if let Some((line, column)) = self.location {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}

/// Every problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// Whether every problem is this machine's, none the file's.
    pub fn environment_only(&self) -> bool {
        self.0.iter().all(|e| e.kind == ProblemKind::Environment)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors with their key paths; the second field says whether the check is offline
/// (reads nothing this machine holds: no environment variable, no file the config names).
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<ConfigError>, pub(super) bool);

impl Problems {
    /// A problem in the file.
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(ProblemKind::File, path.into(), message.into());
    }

    /// Something the file names is missing on this machine (a secret file, a variable).
    pub(super) fn environment(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(ProblemKind::Environment, path.into(), message.into());
    }

    fn push(&mut self, kind: ProblemKind, path: String, message: String) {
        self.0.push(ConfigError {
            path,
            message,
            kind,
            location: None,
        });
    }

    /// Whether files and variables of this machine are left unread.
    pub(super) fn offline(&self) -> bool {
        self.1
    }

    /// A duration within `range`, or `range.min` after recording the problem.
    pub(super) fn duration(&mut self, path: &str, s: &str, range: Range) -> Duration {
        self.duration_checked(path, s, range).unwrap_or(range.min)
    }

    /// A duration within `range`, or `None` after recording the problem.
    pub(super) fn duration_checked(
        &mut self,
        path: &str,
        s: &str,
        range: Range,
    ) -> Option<Duration> {
        self.check(path, values::duration(s).and_then(|d| range.check(d, s)))
    }

    /// A size in bytes, or zero after recording the problem.
    pub(super) fn size(&mut self, path: &str, s: &str) -> u64 {
        self.check(path, values::size(s)).unwrap_or_default()
    }

    /// Keeps the value, or records the error and returns `None`.
    pub(super) fn check<T>(
        &mut self,
        path: impl Into<String>,
        result: Result<T, String>,
    ) -> Option<T> {
        result.map_err(|message| self.add(path, message)).ok()
    }
}

/// How a config is checked.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Check the file alone, for CI: `${VAR}` stays unresolved and no file the config names
    /// (secrets, CA) is read; the keys that depend on them are not checked.
    pub offline: bool,
}

/// Why a config file cannot be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The file itself cannot be read: missing, unreadable, not UTF-8.
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file was read; these are its problems.
    Invalid(ConfigErrors),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Unreadable { path, error } => {
                write!(f, "cannot read config file {}: {error}", path.display())
            }
            LoadError::Invalid(errors) => errors.fmt(f),
        }
    }
}

impl std::error::Error for LoadError {}

/// A config as read: the typed values, and what `config show` prints them from.
pub(super) struct Parsed {
    pub(super) config: Config,
    /// The file's values after `${VAR}`, with every default filled in.
    pub(super) raw: RawConfig,
}

impl Config {
    /// Reads and validates a config file, with `${VAR}` taken from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_with(path, LoadOptions::default()).map_err(|e| match e {
            LoadError::Invalid(errors) => errors,
            unreadable => ConfigErrors(vec![ConfigError {
                path: path.display().to_string(),
                message: unreadable.to_string(),
                kind: ProblemKind::Environment,
                location: None,
            }]),
        })
    }

    /// [`load`](Self::load), telling a file that cannot be read from one that is wrong.
    pub fn load_with(path: &Path, options: LoadOptions) -> Result<Config, LoadError> {
        let text = read(path)?;
        Config::parse_with(&text, &|name| std::env::var(name).ok(), options)
            .map_err(LoadError::Invalid)
    }

    /// Parses and validates config text, with `${VAR}` taken from `env`.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
        Config::parse_with(text, env, LoadOptions::default())
    }

    /// [`parse`](Self::parse) with options.
    pub fn parse_with(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        options: LoadOptions,
    ) -> Result<Config, ConfigErrors> {
        parse(text, env, options).map(|parsed| parsed.config)
    }
}

/// The text of a config file.
pub fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|error| LoadError::Unreadable {
        path: path.to_path_buf(),
        error,
    })
}

/// Text to config, every problem found in one go: TOML syntax first (nothing else can be
/// trusted without it), then `${VAR}`, the file's structure (unknown keys, wrong types) and the
/// values. A problem about a key already found wrong, or about a value still holding an
/// unresolved `${VAR}`, is not reported again.
pub(super) fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    options: LoadOptions,
) -> Result<Parsed, ConfigErrors> {
    let (doc, syntax) = toml::de::DeTable::parse_recoverable(text);
    let at = Locations::new(text, doc.get_ref());
    let mut p = Problems(Vec::new(), options.offline);
    for error in &syntax {
        p.add("(syntax)", error.message());
        p.0.last_mut().expect("just added").location =
            error.span().map(|span| at.line_column(span.start));
    }
    if !syntax.is_empty() {
        return Err(ConfigErrors(p.0));
    }
    let mut value: toml::Value = toml::from_str(text).map_err(|e| {
        let location = e.span().map(|span| at.line_column(span.start));
        let mut errors = ConfigErrors(vec![]);
        errors.0.push(ConfigError {
            path: "(syntax)".into(),
            message: e.message().to_string(),
            kind: ProblemKind::File,
            location,
        });
        errors
    })?;
    let mut unresolved = Vec::new();
    interpolate_tree(&mut value, String::new(), env, &mut p, &mut unresolved);
    let (raw, wrong) = super::structure::deserialize(value, &mut p);
    let parsed = raw.map(|raw| {
        let (config, problems) = super::validate::validate(&raw, options.offline);
        let already = |path: &str| wrong.iter().chain(&unresolved).any(|w| covers(w, path));
        p.0.extend(problems.into_iter().filter(|e| !already(&e.path)));
        Parsed { config, raw }
    });
    match parsed {
        Some(parsed) if p.0.is_empty() => Ok(parsed),
        _ => Err(finish(p.0, &at)),
    }
}

/// Whether a problem at `path` is about the key `key` or something inside it.
fn covers(key: &str, path: &str) -> bool {
    path.strip_prefix(key)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Each problem once, with its place in the file, in the file's order (problems about keys the
/// file does not have last).
fn finish(problems: Vec<ConfigError>, at: &Locations) -> ConfigErrors {
    let mut out: Vec<ConfigError> = Vec::with_capacity(problems.len());
    for mut e in problems {
        if out
            .iter()
            .any(|o| o.path == e.path && o.message == e.message)
        {
            continue;
        }
        e.location = e.location.or_else(|| at.find(&e.path));
        out.push(e);
    }
    out.sort_by_key(|e| e.location.unwrap_or((u32::MAX, 0)));
    ConfigErrors(out)
}

fn interpolate_tree(
    value: &mut toml::Value,
    path: String,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
    unresolved: &mut Vec<String>,
) {
    match value {
        toml::Value::String(s) => interpolate(s, path, env, problems, unresolved),
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_tree(item, format!("{path}[{i}]"), env, problems, unresolved);
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                interpolate_tree(item, child, env, problems, unresolved);
            }
        }
        _ => {}
    }
}

/// One string's `${VAR}`s. A variable that is unset (or not looked up, offline) stays as the
/// text `${VAR}` and its key is recorded as unresolved; unset is this machine's problem.
fn interpolate(
    s: &mut String,
    path: String,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
    unresolved: &mut Vec<String>,
) {
    let offline = problems.offline();
    let missing = std::cell::RefCell::new(Vec::new());
    let lookup = |name: &str| {
        let found = if offline { None } else { env(name) };
        found.or_else(|| {
            missing.borrow_mut().push(name.to_string());
            Some(format!("${{{name}}}"))
        })
    };
    match values::interpolate(s, &lookup) {
        Ok(new) => *s = new,
        Err(message) => return problems.add(path, message),
    }
    let missing = missing.into_inner();
    if missing.is_empty() {
        return;
    }
    if !offline {
        for name in missing {
            problems.environment(&path, format!("environment variable {name} is not set"));
        }
    }
    unresolved.push(path);
}
