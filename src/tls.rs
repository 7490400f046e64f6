//! TLS on the proxy listener (`listen.tls_cert_file`, `listen.tls_key_file`): rustls with the
//! ring provider, ALPN `h2` and `http/1.1`. The PEM files are re-read when they change, as the
//! secret files are (`credentials/watch.rs`); a pair that cannot be read or does not match keeps
//! the last good one, logged once, and again once good. A new handshake uses the pair current
//! when it starts.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::Tls;
use crate::credentials::watch;

/// A rustls server config from a certificate chain and a key in PEM files. The error names the
/// file, never its content.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<rustls::ServerConfig, String> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "cannot read a PEM certificate chain from {}: {e}",
                cert_file.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        format!(
            "cannot read a PEM private key from {}: {e}",
            key_file.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "{} and {} do not make a certificate and its key: {e}",
                cert_file.display(),
                key_file.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The listener's certificate and key, swapped whole when their files change.
pub struct TlsFiles {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: ArcSwap<rustls::ServerConfig>,
    /// Whether the last read was good: a failure is logged when this turns false.
    good: AtomicBool,
}

impl TlsFiles {
    /// Reads the pair once; fails (naming the file) if it cannot.
    pub fn load(tls: &Tls) -> anyhow::Result<Arc<Self>> {
        let config = server_config(&tls.cert_file, &tls.key_file).map_err(anyhow::Error::msg)?;
        Ok(Arc::new(TlsFiles {
            cert_file: tls.cert_file.clone(),
            key_file: tls.key_file.clone(),
            current: ArcSwap::from_pointee(config),
            good: AtomicBool::new(true),
        }))
    }

    /// An acceptor with the current pair.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// Re-reads the pair (blocking) and swaps it in when good.
    pub fn reload(&self) {
        let read = server_config(&self.cert_file, &self.key_file);
        let was_good = self.good.swap(read.is_ok(), Ordering::Relaxed);
        match read {
            Ok(config) => {
                self.current.store(Arc::new(config));
                if !was_good {
                    tracing::info!(cert = %self.cert_file.display(), "TLS certificate files good again");
                }
            }
            Err(error) if was_good => {
                tracing::warn!(%error, "TLS certificate reload failed; keeping the last good pair, and not logging this again until the files are good");
            }
            Err(_) => {}
        }
    }

    /// Watches the files' directories and re-reads them on change (and every
    /// [`watch::POLL_INTERVAL`]), until `shutdown` resolves.
    pub async fn watch(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let mut dirs: Vec<PathBuf> = [&self.cert_file, &self.key_file]
            .iter()
            .map(|f| f.parent().unwrap_or(Path::new(".")).to_path_buf())
            .collect();
        dirs.dedup();
        let (changes, signals) = tokio::sync::mpsc::channel(1);
        let _watcher = watch::watch_dirs(&dirs, changes);
        let reload = || {
            let files = self.clone();
            async move {
                let _ = tokio::task::spawn_blocking(move || files.reload()).await;
            }
        };
        watch::reload_on_change(
            signals,
            watch::POLL_INTERVAL,
            watch::DEBOUNCE,
            reload,
            shutdown,
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ProblemKind};

    fn fixtures(dir: &Path) -> Tls {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let tls = Tls {
            cert_file: dir.join("tls.crt"),
            key_file: dir.join("tls.key"),
        };
        std::fs::copy(from.join("localhost.pem"), &tls.cert_file).unwrap();
        std::fs::copy(from.join("localhost.key"), &tls.key_file).unwrap();
        tls
    }

    #[test]
    fn a_bad_pair_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let tls = fixtures(dir.path());
        let files = TlsFiles::load(&tls).unwrap();
        let first = files.current.load_full();
        std::fs::write(&tls.key_file, "not a key").unwrap();
        files.reload();
        assert!(Arc::ptr_eq(&first, &files.current.load_full()));
        assert!(!files.good.load(Ordering::Relaxed));
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/localhost.key"),
            &tls.key_file,
        )
        .unwrap();
        files.reload();
        assert!(!Arc::ptr_eq(&first, &files.current.load_full()));
        assert_eq!(files.current.load().alpn_protocols[0], b"h2");
    }

    #[test]
    fn the_config_needs_both_files_and_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let tls = fixtures(dir.path());
        let text = |listen: &str| {
            format!(
                "[listen]\n{listen}\n[[account]]\nname = \"m\"\napi_key = \"k\"\napi_secret = \"s\"\n[[team]]\nname = \"a\"\n"
            )
        };
        let both = text(&format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
            tls.cert_file.display(),
            tls.key_file.display()
        ));
        let config = Config::parse(&both, &|_| None).unwrap();
        assert_eq!(config.listen.tls, Some(tls.clone()));
        let one = text(&format!("tls_cert_file = \"{}\"", tls.cert_file.display()));
        let errors = Config::parse(&one, &|_| None).unwrap_err();
        assert_eq!(errors.0[0].path, "listen.tls_key_file");
        assert_eq!(errors.0[0].kind, ProblemKind::File);
        std::fs::remove_file(&tls.key_file).unwrap();
        let errors = Config::parse(&both, &|_| None).unwrap_err();
        assert_eq!(errors.0[0].path, "listen.tls_cert_file");
        assert_eq!(errors.0[0].kind, ProblemKind::Environment);
    }
}
