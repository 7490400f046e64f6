//! The config commands as an operator runs them: `check-config` (every problem, with its line;
//! the file's fault told from this machine's), `config show` (never a secret), `config init`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::process::BIN;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args` and `envs` (and nothing of the test's environment that the config
/// could name).
fn run(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Problem lines on stderr (indented), without the `(hint)` lines.
fn problem_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("  ") && !l.trim_start().starts_with('('))
        .collect()
}

const THREE_PROBLEMS: &str = r#"[listen]
proxy = "127.0.0.1:8080"
max_conections = 10

[upstream]
deadline = 30

[[account]]
name = "main"
api_key = "k"
api_secret = "s"

[[team]]
name = "payments"
rate = "fast"
"#;

#[test]
fn check_config_lists_every_problem_of_one_file_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "bad.toml", THREE_PROBLEMS);
    let out = run(&["check-config", "--config", path(&file)], &[]);
    assert_eq!(out.code, Some(64), "{}", out.stderr);
    let lines = problem_lines(&out.stderr);
    assert!(
        out.stderr.starts_with(&format!(
            "{}: invalid configuration (3 problem(s)):",
            path(&file)
        )),
        "{}",
        out.stderr
    );
    let expected = [
        "line 3, column 1: listen.max_conections: unknown field `max_conections`",
        "line 6, column 1: upstream.deadline: invalid type: integer `30`, expected a string",
        "line 15, column 1: team[0].rate: expected N/s, N/m or N/h, got \"fast\"",
    ];
    assert_eq!(lines.len(), 3, "{}", out.stderr);
    for (line, expected) in lines.iter().zip(&expected) {
        assert!(
            line.trim_start().starts_with(expected),
            "{line}\nexpected {expected}"
        );
    }
}

#[test]
fn check_config_reports_every_syntax_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "syntax.toml",
        "[listen\nproxy = 1\n[x]\na = = 2\n",
    );
    let out = run(&["check-config", "--config", path(&file)], &[]);
    assert_eq!(out.code, Some(64), "{}", out.stderr);
    let lines = problem_lines(&out.stderr);
    assert!(
        lines[0].contains("line 1, column 8: (syntax): unclosed table"),
        "{}",
        out.stderr
    );
    assert!(
        lines.iter().any(|l| l.contains("line 4, column ")),
        "{}",
        out.stderr
    );
}

#[test]
fn a_config_without_an_account_says_so_once_and_nothing_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "gw.toml",
        "[[team]]\nname = \"a\"\n[[team]]\nname = \"b\"\ntoken = \"t\"\naccount = \"main\"\n",
    );
    let out = run(&["check-config", "--config", path(&file)], &[]);
    assert_eq!(out.code, Some(64));
    assert_eq!(
        problem_lines(&out.stderr),
        ["  account: at least one [[account]] is required"],
        "{}",
        out.stderr
    );
}

#[test]
fn a_wrong_value_is_reported_once_not_again_as_its_default() {
    // `token = 5` is a type error; its default (no token) must not also be reported as "a team
    // without a token is only allowed on a loopback listener".
    let dir = tempfile::tempdir().unwrap();
    let text = "[listen]\nproxy = \"0.0.0.0:8080\"\n[[account]]\nname = \"main\"\napi_key = \"k\"\napi_secret = \"s\"\n\
                [[team]]\nname = \"a\"\ntoken = 5\n";
    let file = write(dir.path(), "gw.toml", text);
    let out = run(&["check-config", "--config", path(&file)], &[]);
    assert_eq!(out.code, Some(64));
    let lines = problem_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].contains("line 9, column 1: team[0].token: invalid type: integer `5`"),
        "{}",
        out.stderr
    );
}

const FROM_THIS_MACHINE: &str = r#"
[[account]]
name = "main"
api_key = "${GW_CLI_TEST_KEY}"
api_secret_file = "SECRET_DIR/api-secret"

[[team]]
name = "payments"
token = "${GW_CLI_TEST_TOKEN}"
"#;

#[test]
fn a_missing_variable_or_secret_file_is_told_from_a_wrong_file() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    let text = FROM_THIS_MACHINE.replace("SECRET_DIR", path(&secrets));
    let file = write(dir.path(), "gw.toml", &text);
    let check = |offline: bool, envs: &[(&str, &str)]| {
        let mut args = vec!["check-config", "--config", path(&file)];
        if offline {
            args.push("--offline");
        }
        run(&args, envs)
    };

    // Nothing of this machine is there: 78, each thing named, the file not blamed.
    let out = check(false, &[]);
    assert_eq!(out.code, Some(78), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("missing on this machine (3 problem(s))"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("invalid configuration"),
        "{}",
        out.stderr
    );
    for needle in [
        "account[0].api_key: environment variable GW_CLI_TEST_KEY is not set",
        "account[0].api_secret_file: cannot read",
        "team[0].token: environment variable GW_CLI_TEST_TOKEN is not set",
    ] {
        assert!(out.stderr.contains(needle), "{needle}\n{}", out.stderr);
    }
    assert!(out.stderr.contains("--offline"), "{}", out.stderr);

    // Offline (CI): the file alone is checked, and it is right.
    let out = check(true, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("ok (1 account(s), 1 team(s); offline"),
        "{}",
        out.stdout
    );

    // With the machine set up, it passes online too.
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("api-secret"), "s3cret\n").unwrap();
    let envs = [("GW_CLI_TEST_KEY", "k"), ("GW_CLI_TEST_TOKEN", "t")];
    assert_eq!(check(false, &envs).code, Some(0));

    // A wrong file with a missing variable: 64, both listed, each under its heading.
    let wrong = write(
        dir.path(),
        "wrong.toml",
        &format!("{text}rate = \"fast\"\n"),
    );
    let out = run(
        &["check-config", "--config", path(&wrong)],
        &[("GW_CLI_TEST_KEY", "k")],
    );
    assert_eq!(out.code, Some(64), "{}", out.stderr);
    assert!(
        out.stderr.contains("invalid configuration (1 problem(s))"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("team[0].rate: expected N/s"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("missing on this machine (1 problem(s))"),
        "{}",
        out.stderr
    );
    // Offline, the wrong file is still wrong.
    let out = run(
        &["check-config", "--offline", "--config", path(&wrong)],
        &[],
    );
    assert_eq!(out.code, Some(64), "{}", out.stderr);
    assert_eq!(problem_lines(&out.stderr).len(), 1, "{}", out.stderr);
}

#[test]
fn a_missing_config_file_is_its_own_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    for args in [
        vec!["check-config", "--config", path(&missing)],
        vec!["config", "show", "--config", path(&missing)],
        vec!["run", "--config", path(&missing)],
    ] {
        let out = run(&args, &[]);
        assert_eq!(out.code, Some(66), "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(
            out.stderr
                .contains(&format!("cannot read config file {}", path(&missing))),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("config init"), "{}", out.stderr);
    }
}

#[test]
fn config_show_prints_every_key_with_defaults_and_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let file_key = "fIlE-kEy-0c41e2";
    let file_secret = "fIlE-sEcReT-77b0a9";
    std::fs::write(secrets.join("api-key"), file_key).unwrap();
    std::fs::write(secrets.join("api-secret"), file_secret).unwrap();
    let inline_key = "iNlInE-kEy-5d21";
    let literal_secret = "lItErAl-sEcReT-3e8f";
    let env_token = "eNv-ToKeN-a1b2c3";
    let literal_token = "lItErAl-ToKeN-d4e5f6";
    let text = format!(
        r#"
[listen]
proxy = "0.0.0.0:8080"

[[account]]
name = "main"
api_key = "${{GW_SHOW_KEY}}"
api_secret = "{literal_secret}"

[[account]]
name = "kyb"
api_key_file = "{dir}/api-key"
api_secret_file = "{dir}/api-secret"

[[team]]
name = "payments"
account = "main"
token = "${{GW_SHOW_TOKEN}}"

[[team]]
name = "onboarding"
account = "kyb"
token = "{literal_token}"
"#,
        dir = path(&secrets)
    );
    let file = write(dir.path(), "gw.toml", &text);
    let envs = [("GW_SHOW_KEY", inline_key), ("GW_SHOW_TOKEN", env_token)];
    let out = run(&["config", "show", "--config", path(&file)], &envs);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for secret in [
        inline_key,
        literal_secret,
        env_token,
        literal_token,
        file_key,
        file_secret,
    ] {
        assert!(
            !out.stdout.contains(secret),
            "{secret} shown:\n{}",
            out.stdout
        );
        assert!(
            !out.stderr.contains(secret),
            "{secret} on stderr:\n{}",
            out.stderr
        );
    }
    // What it shows is TOML, and every key is there: the file's, and the defaults.
    let shown: toml::Value = toml::from_str(&out.stdout).expect("config show prints TOML");
    assert_eq!(shown["listen"]["proxy"].as_str(), Some("0.0.0.0:8080"));
    assert_eq!(shown["listen"]["idle_timeout"].as_str(), Some("60s"));
    assert_eq!(
        shown["upstream"]["url"].as_str(),
        Some("https://ivs.idenfy.com")
    );
    assert_eq!(shown["retry"]["budget_ratio"].as_float(), Some(0.2));
    assert_eq!(shown["limits"]["max_wait"].as_str(), Some("2s"));
    assert_eq!(shown["log"]["level"].as_str(), Some("info"));
    assert_eq!(shown["team"][1]["rate"].as_str(), Some("20/s"));
    assert_eq!(shown["account"][0]["api_key"].as_str(), Some("[redacted]"));
    assert_eq!(
        shown["account"][0]["api_secret"].as_str(),
        Some("[redacted]")
    );
    assert_eq!(shown["team"][1]["token"].as_str(), Some("[redacted]"));
    assert_eq!(
        shown["account"][1]["api_key_file"].as_str(),
        Some(format!("{}/api-key", path(&secrets)).as_str()),
        "a secret's file is named, not read"
    );
    assert!(out.stdout.contains("# ca_file (not set)"), "{}", out.stdout);
}

#[test]
fn config_show_offline_keeps_variables_unresolved() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[listen]\nadmin = \"${GW_SHOW_ADMIN}\"\n[[account]]\nname = \"main\"\napi_key = \"${K}\"\napi_secret = \"${S}\"\n[[team]]\nname = \"a\"\n";
    let file = write(dir.path(), "gw.toml", text);
    let out = run(
        &["config", "show", "--offline", "--config", path(&file)],
        &[],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("admin = \"${GW_SHOW_ADMIN}\""),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("account = \"main\""),
        "the default account: {}",
        out.stdout
    );
    let out = run(&["config", "show", "--config", path(&file)], &[]);
    assert_eq!(out.code, Some(78), "{}", out.stderr);
    assert!(out.stdout.is_empty());
}

#[test]
fn config_init_writes_starters_that_check_config_accepts() {
    let dir = tempfile::tempdir().unwrap();
    for (name, shared) in [("sidecar.toml", false), ("shared.toml", true)] {
        let file = dir.path().join(name);
        let mut args = vec!["config", "init", "--output", path(&file)];
        if shared {
            args.push("--shared");
        }
        let out = run(&args, &[]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.lines()
                .filter(|l| l.trim_start().starts_with('#'))
                .count()
                > 5,
            "commented"
        );
        assert_eq!(text.contains("token = "), shared, "{text}");
        let out = run(&["check-config", "--offline", "--config", path(&file)], &[]);
        assert_eq!(out.code, Some(0), "{name}: {}", out.stderr);
        // Never over an existing file.
        let out = run(&args, &[]);
        assert_ne!(out.code, Some(0));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    }
    // Without --output: stdout.
    let out = run(&["config", "init"], &[]);
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.contains("[[account]]"));
}
