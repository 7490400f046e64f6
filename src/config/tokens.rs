//! A team's tokens: `token`, `tokens` and `token_file` checked (none empty, the file readable and
//! holding at least one token), and no token shared by two teams.

use std::collections::HashMap;
use std::path::PathBuf;

use super::load::Problems;
use super::raw::RawTeam;
use super::Team;
use crate::identify::read_token_file;
use crate::secret::Secret;

/// The tokens the file gives for the team at `path`, and its token file (read, unless offline,
/// to see that it can be).
pub(super) fn team_tokens(
    p: &mut Problems,
    path: &str,
    raw: &RawTeam,
) -> (Vec<Secret>, Option<PathBuf>) {
    let mut tokens = Vec::new();
    match raw.token.as_deref() {
        Some("") => p.add(
            format!("{path}.token"),
            "must not be empty (omit it for no caller authentication)",
        ),
        Some(token) => tokens.push(Secret::new(token)),
        None => {}
    }
    if let Some(list) = &raw.tokens {
        if list.is_empty() {
            p.add(
                format!("{path}.tokens"),
                "must list at least one token (omit it for no caller authentication)",
            );
        }
        for (j, token) in list.iter().enumerate() {
            match token.as_str() {
                "" => p.add(format!("{path}.tokens[{j}]"), "must not be empty"),
                token => tokens.push(Secret::new(token)),
            }
        }
    }
    let token_file = raw.token_file.as_ref().map(PathBuf::from);
    if let Some(file) = token_file.as_ref().filter(|_| !p.offline()) {
        if let Err(error) = read_token_file(file) {
            p.environment(format!("{path}.token_file"), error);
        }
    }
    (tokens, token_file)
}

/// A token belongs to one team: reported at the second team that has it, naming the first.
pub(super) fn check_unique(p: &mut Problems, teams: &[Team]) {
    let mut owners: HashMap<String, usize> = HashMap::new();
    for (i, team) in teams.iter().enumerate() {
        let inline = team
            .tokens
            .iter()
            .map(|t| (t.expose().to_string(), "token"));
        let from_file = team
            .token_file
            .as_ref()
            .filter(|_| !p.offline())
            .and_then(|file| read_token_file(file).ok())
            .into_iter()
            .flatten()
            .map(|t| (t, "token_file"));
        let mut reported = false;
        for (token, key) in inline.chain(from_file) {
            let owner = *owners.entry(token).or_insert(i);
            if owner != i && !reported {
                reported = true;
                p.add(
                    format!("team[{i}].{key}"),
                    format!(
                        "two teams share this token (team {:?} has it too)",
                        teams[owner].name
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ProblemKind};

    fn problems(teams: &str) -> Vec<(String, String, ProblemKind)> {
        let text =
            format!("[[account]]\nname = \"main\"\napi_key = \"k\"\napi_secret = \"s\"\n{teams}");
        match Config::parse(&text, &|_| None) {
            Ok(_) => Vec::new(),
            Err(e) => {
                e.0.into_iter()
                    .map(|e| (e.path, e.message, e.kind))
                    .collect()
            }
        }
    }

    #[test]
    fn token_and_tokens_together_are_the_teams_tokens() {
        let text = "[[account]]\nname = \"main\"\napi_key = \"k\"\napi_secret = \"s\"\n\
                    [[team]]\nname = \"a\"\ntoken = \"t0\"\ntokens = [\"t1\", \"t2\"]\n";
        let config = Config::parse(text, &|_| None).unwrap();
        let tokens: Vec<&str> = config.teams[0].tokens.iter().map(|t| t.expose()).collect();
        assert_eq!(tokens, ["t0", "t1", "t2"]);
        assert!(config.teams[0].authenticates());
    }

    #[test]
    fn refuses_empty_and_shared_tokens() {
        let found = problems(
            "[[team]]\nname = \"a\"\ntokens = []\n[[team]]\nname = \"b\"\ntokens = [\"x\", \"\"]\n\
             [[team]]\nname = \"c\"\ntokens = [\"y\", \"x\"]\n",
        );
        let paths: Vec<&str> = found.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            ["team[0].tokens", "team[1].tokens[1]", "team[2].token"]
        );
        assert_eq!(
            found[2].1,
            "two teams share this token (team \"b\" has it too)"
        );
    }

    #[test]
    fn a_token_file_is_read_to_check_it_and_its_tokens_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        let team = format!(
            "[[team]]\nname = \"a\"\ntoken_file = \"{}\"\n[[team]]\nname = \"b\"\ntoken = \"x\"\n",
            file.display()
        );
        let found = problems(&team);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "team[0].token_file");
        assert_eq!(found[0].2, ProblemKind::Environment);
        std::fs::write(&file, "x\n").unwrap();
        let found = problems(&team);
        assert_eq!(found[0].0, "team[1].token", "{found:?}");
        std::fs::write(&file, "z\n").unwrap();
        assert_eq!(problems(&team), []);
    }
}
