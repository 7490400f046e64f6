//! `listen.tls_*` and `team.client_cert_san`: TLS on the proxy listener (both files or neither;
//! read unless offline), and mutual TLS before a team may be known by its certificate.

use std::collections::HashSet;
use std::path::PathBuf;

use super::load::Problems;
use super::raw::RawListen;
use super::{Listen, Team, Tls};

/// `listen.tls_cert_file` and `listen.tls_key_file`: both or neither; read (unless offline) to
/// see that they make a certificate and its key.
pub(super) fn tls(p: &mut Problems, raw: &RawListen) -> Option<Tls> {
    let tls = match (&raw.tls_cert_file, &raw.tls_key_file) {
        (Some(cert), Some(key)) => Tls {
            cert_file: PathBuf::from(cert),
            key_file: PathBuf::from(key),
            client_ca_file: raw.tls_client_ca_file.as_ref().map(PathBuf::from),
        },
        (None, None) => {
            if raw.tls_client_ca_file.is_some() {
                p.add(
                    "listen.tls_client_ca_file",
                    "needs listen.tls_cert_file and listen.tls_key_file",
                );
            }
            return None;
        }
        (Some(_), None) => {
            p.add(
                "listen.tls_key_file",
                "missing: tls_cert_file needs its key",
            );
            return None;
        }
        (None, Some(_)) => {
            p.add(
                "listen.tls_cert_file",
                "missing: tls_key_file needs its certificate",
            );
            return None;
        }
    };
    if !p.offline() {
        if let Err(e) = crate::tls::server_config(&tls) {
            let key = match e.starts_with("client CA") {
                true => "listen.tls_client_ca_file",
                false => "listen.tls_cert_file",
            };
            p.environment(key, e);
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
