//! Loading: read the file, interpolate `${VAR}`, deserialize, then `validate` into typed values.
//! Every problem is collected with its key path, so an operator fixes them all in one go.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use super::ranges::Range;
use super::raw::RawConfig;
use super::values;
use super::Config;

/// One problem in a config file: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

/// Every problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", e.path, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors with their key paths.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<ConfigError>);

impl Problems {
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
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

impl Config {
    /// Reads and validates a config file, with `${VAR}` taken from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: path.display().to_string(),
                message: e.to_string(),
            }])
        })?;
        Config::parse(&text, &|name| std::env::var(name).ok())
    }

    /// Parses and validates config text, with `${VAR}` taken from `env`.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
        let single =
            |path: String, message: String| ConfigErrors(vec![ConfigError { path, message }]);
        let mut value: toml::Value =
            toml::from_str(text).map_err(|e| single("(file)".into(), e.message().to_string()))?;
        let mut problems = Problems::default();
        interpolate_tree(&mut value, String::new(), env, &mut problems);
        if !problems.0.is_empty() {
            return Err(ConfigErrors(problems.0));
        }
        let raw: RawConfig = serde_path_to_error::deserialize(value)
            .map_err(|e| single(e.path().to_string(), e.inner().to_string()))?;
        super::validate::validate(raw)
    }
}

fn interpolate_tree(
    value: &mut toml::Value,
    path: String,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) {
    match value {
        toml::Value::String(s) => {
            if let Some(new) = problems.check(&path, values::interpolate(s, env)) {
                *s = new;
            }
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_tree(item, format!("{path}[{i}]"), env, problems);
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                interpolate_tree(item, child, env, problems);
            }
        }
        _ => {}
    }
}
