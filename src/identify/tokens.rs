//! Team tokens as the identify step looks them up: a table from the SHA-256 of each token to its
//! team, swapped whole when a `token_file` changes, so that a rotation (add the new token, move
//! the callers, remove the old one) has no moment without a valid token.
//!
//! Token files are re-read like secret files (`credentials/watch.rs`: the directory watched,
//! a burst of changes read once, a slow poll in any case). A file that cannot be read, holds no
//! token, or holds another team's token keeps the team's last good tokens from it; that is logged
//! once, and again once it is good.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;

/// Reads a token file: one token per line, surrounding whitespace trimmed, blank lines and
/// lines starting with `#` skipped; a file with no token is refused. The error names the file,
/// never a token.
pub fn read_token_file(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if tokens.is_empty() {
        return Err(format!("{} holds no token", path.display()));
    }
    Ok(tokens)
}

/// Which team a token is, by the SHA-256 of the token.
#[derive(Default)]
struct Table(HashMap<[u8; 32], Entry>);

struct Entry {
    team: usize,
    token: Box<[u8]>,
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Table({} tokens)", self.0.len())
    }
}

impl Table {
    /// Adds `token` for `team`; false (and nothing added) when another team has it.
    fn insert(&mut self, team: usize, token: &[u8]) -> bool {
        let entry = self.0.entry(digest(token)).or_insert_with(|| Entry {
            team,
            token: token.into(),
        });
        entry.team == team
    }

    /// Whether any of `tokens` is another team's than `team`.
    fn taken(&self, team: usize, tokens: &[String]) -> bool {
        tokens.iter().any(|t| {
            self.0
                .get(&digest(t.as_bytes()))
                .is_some_and(|e| e.team != team)
        })
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// One team's `token_file`, and the tokens last read from it.
#[derive(Debug)]
struct TokenFile {
    team: usize,
    team_name: String,
    path: PathBuf,
    last_good: Mutex<Vec<String>>,
    /// Whether the last read was good: a failure is logged when this turns false.
    good: AtomicBool,
}

/// Every team's tokens: those of the config file, and those of token files.
#[derive(Debug)]
pub(super) struct Tokens {
    table: ArcSwap<Table>,
    inline: Vec<(usize, Vec<u8>)>,
    files: Vec<TokenFile>,
}

impl Tokens {
    /// The config's tokens, and each token file read once.
    pub(super) fn new(config: &Config) -> Self {
        let inline = config
            .teams
            .iter()
            .enumerate()
            .flat_map(|(i, team)| {
                team.tokens
                    .iter()
                    .map(move |t| (i, t.expose().as_bytes().to_vec()))
            })
            .collect();
        let files = config
            .teams
            .iter()
            .enumerate()
            .filter_map(|(i, team)| {
                Some(TokenFile {
                    team: i,
                    team_name: team.name.clone(),
                    path: team.token_file.clone()?,
                    last_good: Mutex::new(Vec::new()),
                    good: AtomicBool::new(true),
                })
            })
            .collect();
        let tokens = Tokens {
            table: ArcSwap::from_pointee(Table::default()),
            inline,
            files,
        };
        tokens.reload();
        tokens
    }

    /// The team whose token `token` is: found by digest, then compared in constant time.
    pub(super) fn lookup(&self, token: &[u8]) -> Option<usize> {
        let table = self.table.load();
        let entry = table.0.get(&digest(token))?;
        bool::from(entry.token.ct_eq(token)).then_some(entry.team)
    }

    /// Whether no team has any token (a sidecar): nothing to look up.
    pub(super) fn is_empty(&self) -> bool {
        self.inline.is_empty() && self.files.is_empty()
    }

    /// Re-reads every token file (blocking) and swaps in the new table.
    pub(super) fn reload(&self) {
        let mut table = Table::default();
        for (team, token) in &self.inline {
            table.insert(*team, token);
        }
        for file in &self.files {
            let read = read_token_file(&file.path).and_then(|tokens| {
                match table.taken(file.team, &tokens) {
                    true => Err(format!(
                        "{} holds another team's token",
                        file.path.display()
                    )),
                    false => Ok(tokens),
                }
            });
            let tokens = file.settle(read);
            for token in tokens {
                table.insert(file.team, token.as_bytes());
            }
        }
        self.table.store(Arc::new(table));
    }

    /// The token files, for the watcher.
    pub(super) fn watched_files(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }
}

impl TokenFile {
    /// Takes a read of the file: the tokens to use from now on (the last good ones when the read
    /// failed), logging a change, a failure (once) and a recovery (once).
    fn settle(&self, read: Result<Vec<String>, String>) -> Vec<String> {
        let was_good = self.good.swap(read.is_ok(), Ordering::Relaxed);
        let mut last_good = self
            .last_good
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match read {
            Ok(tokens) if tokens != *last_good => {
                tracing::info!(team = %self.team_name, tokens = tokens.len(), "team tokens reloaded");
                *last_good = tokens;
            }
            Ok(_) if !was_good => {
                tracing::info!(team = %self.team_name, "team token file good again, unchanged");
            }
            Ok(_) => {}
            Err(error) if was_good => {
                tracing::warn!(team = %self.team_name, %error, "team token file refused; keeping its last good tokens, and not logging this again until it is good");
            }
            Err(_) => {}
        }
        last_good.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_is_one_token_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "# rotation of 2026-12\n  old-token \n\nnew-token\n").unwrap();
        assert_eq!(read_token_file(&file).unwrap(), ["old-token", "new-token"]);
        std::fs::write(&file, "# nothing yet\n\n").unwrap();
        assert!(read_token_file(&file)
            .unwrap_err()
            .ends_with("holds no token"));
        std::fs::remove_file(&file).unwrap();
        assert!(read_token_file(&file)
            .unwrap_err()
            .starts_with("cannot read"));
    }

    fn tokens(dir: &Path, file_text: &str) -> (PathBuf, Tokens) {
        let file = dir.join("tokens");
        std::fs::write(&file, file_text).unwrap();
        let text = format!(
            "[[account]]\nname = \"main\"\napi_key = \"k\"\napi_secret = \"s\"\n\
             [[team]]\nname = \"a\"\ntoken_file = \"{}\"\n[[team]]\nname = \"b\"\ntoken = \"tok-b\"\n",
            file.display()
        );
        (file, Tokens::new(&Config::parse(&text, &|_| None).unwrap()))
    }

    #[test]
    fn a_bad_token_file_keeps_the_last_good_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let (file, tokens) = tokens(dir.path(), "tok-a1\n");
        assert_eq!(tokens.lookup(b"tok-a1"), Some(0));
        assert_eq!(tokens.lookup(b"tok-b"), Some(1));
        for bad in ["\n# emptied\n", "tok-a1\ntok-b\ntok-a2\n"] {
            std::fs::write(&file, bad).unwrap();
            tokens.reload();
            assert_eq!(tokens.lookup(b"tok-a1"), Some(0), "{bad:?}");
            assert_eq!(tokens.lookup(b"tok-a2"), None, "{bad:?}");
            assert_eq!(tokens.lookup(b"tok-b"), Some(1), "b keeps its own token");
        }
        std::fs::remove_file(&file).unwrap();
        tokens.reload();
        assert_eq!(tokens.lookup(b"tok-a1"), Some(0));
        std::fs::write(&file, "tok-a2\n").unwrap();
        tokens.reload();
        assert_eq!(tokens.lookup(b"tok-a1"), None);
        assert_eq!(tokens.lookup(b"tok-a2"), Some(0));
        assert!(!tokens.is_empty());
    }

    #[test]
    fn a_token_belongs_to_one_team() {
        let mut table = Table::default();
        assert!(table.insert(0, b"a"));
        assert!(table.insert(0, b"a"));
        assert!(!table.insert(1, b"a"));
        assert!(table.taken(1, &["b".into(), "a".into()]));
        assert!(!table.taken(0, &["a".into()]));
        assert_eq!(format!("{table:?}"), "Table(1 tokens)");
    }
}
