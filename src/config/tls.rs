//! `listen.tls_*`, `listen.webhook_tls_*` and `team.client_cert_san`: TLS on the proxy and the
//! webhook listeners (both files or neither; read unless offline), and mutual TLS before a team
//! may be known by its certificate.

use std::collections::HashSet;
use std::path::PathBuf;

use super::load::Problems;
use super::raw::RawListen;
use super::{Listen, Team, Tls};
use crate::tls::ClientCert;

/// `listen.tls_cert_file` and `listen.tls_key_file`: both or neither; read (unless offline) to
/// see that they make a certificate and its key.
pub(super) fn tls(p: &mut Problems, raw: &RawListen) -> Option<Tls> {
    let files = [
        &raw.tls_cert_file,
        &raw.tls_key_file,
        &raw.tls_client_ca_file,
    ];
    pair(p, "listen.tls", files, ClientCert::Optional)
}

/// `listen.webhook_tls_cert_file` and `listen.webhook_tls_key_file`, as [`tls`], for the webhook
/// listener, which they need; there a client CA makes a client certificate required.
pub(super) fn webhook_tls(p: &mut Problems, raw: &RawListen) -> Option<Tls> {
    let files = [
        &raw.webhook_tls_cert_file,
        &raw.webhook_tls_key_file,
        &raw.webhook_tls_client_ca_file,
    ];
    let tls = pair(p, "listen.webhook_tls", files, ClientCert::Required)?;
    if raw.webhook.is_none() {
        p.add("listen.webhook_tls_cert_file", "needs listen.webhook");
    }
    Some(tls)
}

/// `{prefix}_cert_file`, `{prefix}_key_file` and `{prefix}_client_ca_file`.
fn pair(
    p: &mut Problems,
    prefix: &str,
    [cert, key, ca]: [&Option<String>; 3],
    client: ClientCert,
) -> Option<Tls> {
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Tls {
            cert_file: PathBuf::from(cert),
            key_file: PathBuf::from(key),
            client_ca_file: ca.as_ref().map(PathBuf::from),
        },
        (None, None) => {
            if ca.is_some() {
                p.add(
                    format!("{prefix}_client_ca_file"),
                    format!("needs {prefix}_cert_file and {prefix}_key_file"),
                );
            }
            return None;
        }
        (Some(_), None) => {
            p.add(
                format!("{prefix}_key_file"),
                format!("missing: {prefix}_cert_file needs its key"),
            );
            return None;
        }
        (None, Some(_)) => {
            p.add(
                format!("{prefix}_cert_file"),
                format!("missing: {prefix}_key_file needs its certificate"),
            );
            return None;
        }
    };
    if !p.offline() {
        if let Err(e) = crate::tls::server_config(&tls, client) {
            let key = match e.starts_with("client CA") {
                true => "client_ca_file",
                false => "cert_file",
            };
            p.environment(format!("{prefix}_{key}"), e);
        }
    }
    Some(tls)
}

/// A team's `client_cert_san` needs mutual TLS, and belongs to one team.
pub(super) fn check_client_cert_sans(p: &mut Problems, teams: &[Team], listen: &Listen) {
    let mutual = listen
        .tls
        .as_ref()
        .is_some_and(|t| t.client_ca_file.is_some());
    let mut sans = HashSet::new();
    for (i, team) in teams.iter().enumerate() {
        let Some(san) = &team.client_cert_san else {
            continue;
        };
        if !mutual {
            p.add(
                format!("team[{i}].client_cert_san"),
                "needs listen.tls_client_ca_file (mutual TLS)",
            );
        }
        if !sans.insert(san) {
            p.add(
                format!("team[{i}].client_cert_san"),
                format!("two teams have {san:?}"),
            );
        }
    }
}
