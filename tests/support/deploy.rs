//! What the checks of `deploy/` share: finding the external tools (kubectl, promtool,
//! kubernetes-validate, checkov), rendering the kustomize overlays, and reading YAML.
//!
//! A tool that is missing skips its check with a notice on stderr, so that `cargo test` passes on
//! a machine without them; with `IDENFY_GATEWAY_REQUIRE_DEPLOY_TOOLS=1` (set by `.ci/run`, which
//! installs them) a missing tool fails the test instead.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_yaml_ng::Value;

/// The environment variable that turns a missing tool into a failure.
pub const REQUIRE: &str = "IDENFY_GATEWAY_REQUIRE_DEPLOY_TOOLS";

/// Where `.ci/deploy-tools` installs the Python tools (a virtualenv) and, when the machine has
/// none, kubectl: searched after `PATH`.
pub fn tool_dirs() -> [PathBuf; 2] {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/deploy-tools");
    [tools.join("venv/bin"), tools.join("bin")]
}

/// The path of `name` on `PATH` or in [`tools_venv`]; `None` (after a notice) when it is missing
/// and not required.
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(tool_dirs())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        assert!(
            std::env::var(REQUIRE).as_deref() != Ok("1"),
            "{name} is required ({REQUIRE}=1) but not on PATH nor in {:?}",
            tool_dirs()
        );
        // Straight to stderr, past the test harness's capture: a skip must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: {name} not found (`.ci/run` installs it; {REQUIRE}=1 requires it)"
        );
    }
    found
}

/// Runs a command and returns its output; panics when it cannot start.
pub fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// The repository's `deploy/` folder.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every overlay under `deploy/kubernetes/overlays`, sorted.
pub fn overlays() -> Vec<PathBuf> {
    let dir = deploy_dir().join("kubernetes/overlays");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("kustomization.yaml").is_file())
        .collect();
    found.sort();
    assert!(found.len() >= 4, "overlays: {found:?}");
    found
}

/// The name of an overlay's folder.
pub fn name(overlay: &Path) -> String {
    overlay.file_name().unwrap().to_string_lossy().into_owned()
}

/// `kubectl kustomize OVERLAY`, as text; panics with kubectl's message when it fails.
pub fn render(kubectl: &Path, overlay: &Path) -> String {
    let out = run(Command::new(kubectl).arg("kustomize").arg(overlay));
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        overlay.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The documents of a multi-document YAML text.
pub fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("valid YAML"))
        .filter(|doc: &Value| !doc.is_null())
        .collect()
}

/// One YAML file.
pub fn yaml_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `kind/name` of a manifest.
pub fn id(doc: &Value) -> String {
    format!("{}/{}", str_at(doc, "kind"), str_at(doc, "metadata.name"))
}

/// The value at a dotted path (`spec.template.spec`), `Null` when absent.
pub fn at<'a>(doc: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(doc, |value, key| &value[key])
}

/// The string at a dotted path, `""` when absent.
pub fn str_at<'a>(doc: &'a Value, path: &str) -> &'a str {
    at(doc, path).as_str().unwrap_or("")
}

/// The list at a dotted path, empty when absent.
pub fn list_at<'a>(doc: &'a Value, path: &str) -> &'a [Value] {
    at(doc, path)
        .as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Every `idenfy_gateway_*` name (and recording rule `idenfy_gateway:*`) in a text.
pub fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut names = std::collections::BTreeSet::new();
    let mut i = 0;
    while let Some(found) = text[i..].find("idenfy_gateway") {
        let start = i + found;
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
        let mut end = start;
        while end < bytes.len() && word(bytes[end]) {
            end += 1;
        }
        if start == 0 || !word(bytes[start - 1]) {
            names.insert(text[start..end].to_owned());
        }
        i = end;
    }
    names
}
