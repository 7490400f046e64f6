//! TLS on the proxy listener (`listen.tls_cert_file`, `listen.tls_key_file`): rustls with the
//! ring provider, ALPN `h2` and `http/1.1`; with `listen.tls_client_ca_file`, mutual TLS: a
//! verified client certificate's DNS names go with each request, and a team may be identified
//! by one (`team.client_cert_san`). The PEM files are re-read when they change, as the
//! secret files are (`credentials/watch.rs`); a pair that cannot be read or does not match keeps
//! the last good one, logged once, and again once good. A new handshake uses the pair current
//! when it starts. The listeners do the handshakes (`server.rs`); HTTP/1.1 over TLS is served by
//! the proxy's own loop (`server/h1.rs`), h2 by hyper.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::Request;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::task::{Context, Poll};
use tokio_rustls::TlsAcceptor;
use tower::Service;

use crate::config::Tls;
use crate::credentials::watch;
pub use crate::identify::ClientCertNames;

/// Whether a client must present a certificate when the listener has a client CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCert {
    /// The proxy listener: a client without one may still present a token.
    Optional,
    /// The webhook listener: the certificate is the only proof asked of the connection.
    Required,
}

/// A rustls server config from a certificate chain and a key in PEM files, asking for client
/// certificates signed by the client CA when there is one (mutual TLS; `client` says whether a
/// client may present none). The error names the file, never its content; one about the client
/// CA starts with "client CA".
pub fn server_config(tls: &Tls, client: ClientCert) -> Result<rustls::ServerConfig, String> {
    let (cert_file, key_file) = (&tls.cert_file, &tls.key_file);
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
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, provider, client)?),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "{} and {} do not make a certificate and its key: {e}",
            cert_file.display(),
            key_file.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Verifies client certificates against the CA in `ca_file`; with [`ClientCert::Optional`] a
/// client may present none.
fn client_verifier(
    ca_file: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
    client: ClientCert,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("client CA: cannot read {}: {e}", ca_file.display()))?;
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("client CA: {}: {e}", ca_file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "client CA: {} holds no certificate",
            ca_file.display()
        ));
    }
    let builder =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = match client {
        ClientCert::Optional => builder.allow_unauthenticated(),
        ClientCert::Required => builder,
    };
    builder
        .build()
        .map_err(|e| format!("client CA: {}: {e}", ca_file.display()))
}

/// The DNS names (SAN) of the client certificate the handshake verified, if any.
pub fn client_cert_names(conn: &rustls::ServerConnection) -> Option<ClientCertNames> {
    let cert = conn.peer_certificates()?.first()?;
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    let names: Vec<String> = cert.valid_dns_names().map(str::to_string).collect();
    Some(ClientCertNames(names.into()))
}

/// Adds the connection's [`ClientCertNames`] to each request, for `identify`.
#[derive(Clone)]
pub struct WithClientCert<S> {
    pub inner: S,
    pub names: Option<ClientCertNames>,
}

impl<S, B> Service<Request<B>> for WithClientCert<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        if let Some(names) = &self.names {
            req.extensions_mut().insert(names.clone());
        }
        self.inner.call(req)
    }
}

/// The listener's certificate and key, swapped whole when their files change.
pub struct TlsFiles {
    tls: Tls,
    client: ClientCert,
    current: ArcSwap<rustls::ServerConfig>,
    /// Whether the last read was good: a failure is logged when this turns false.
    good: AtomicBool,
}

impl TlsFiles {
    /// Reads the pair once; fails (naming the file) if it cannot.
    pub fn load(tls: &Tls, client: ClientCert) -> anyhow::Result<Arc<Self>> {
        let config = server_config(tls, client).map_err(anyhow::Error::msg)?;
        Ok(Arc::new(TlsFiles {
            tls: tls.clone(),
            client,
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
        let read = server_config(&self.tls, self.client);
        let was_good = self.good.swap(read.is_ok(), Ordering::Relaxed);
        match read {
            Ok(config) => {
                self.current.store(Arc::new(config));
                if !was_good {
                    tracing::info!(cert = %self.tls.cert_file.display(), "TLS certificate files good again");
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
        let files: Vec<PathBuf> = [&self.tls.cert_file, &self.tls.key_file]
            .into_iter()
            .chain(self.tls.client_ca_file.as_ref())
            .cloned()
            .collect();
        let reload = || {
            let files = self.clone();
            async move {
                let _ = tokio::task::spawn_blocking(move || files.reload()).await;
            }
        };
        watch::watch_and_reload(&files, reload, shutdown).await;
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
            client_ca_file: None,
        };
        std::fs::copy(from.join("localhost.pem"), &tls.cert_file).unwrap();
        std::fs::copy(from.join("localhost.key"), &tls.key_file).unwrap();
        tls
    }

    #[test]
    fn a_bad_pair_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let tls = fixtures(dir.path());
        let files = TlsFiles::load(&tls, ClientCert::Optional).unwrap();
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

    #[test]
    fn a_client_cert_san_needs_mutual_tls() {
        let dir = tempfile::tempdir().unwrap();
        let tls = fixtures(dir.path());
        let text = |ca: &str| {
            format!(
                "[listen]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n{ca}\n\
                 [[account]]\nname = \"m\"\napi_key = \"k\"\napi_secret = \"s\"\n\
                 [[team]]\nname = \"a\"\nclient_cert_san = \"a.internal\"\n\
                 [[team]]\nname = \"b\"\nclient_cert_san = \"a.internal\"\n",
                tls.cert_file.display(),
                tls.key_file.display()
            )
        };
        let problems = |text: &str| -> Vec<(String, ProblemKind)> {
            let errors = Config::parse(text, &|_| None).unwrap_err();
            errors.0.into_iter().map(|e| (e.path, e.kind)).collect()
        };
        let without = problems(&text(""));
        assert_eq!(without.len(), 3, "{without:?}");
        assert_eq!(without[0].0, "team[0].client_cert_san");
        let ca = dir.path().join("ca.pem");
        let with_ca = text(&format!("tls_client_ca_file = \"{}\"", ca.display()));
        let missing_ca = problems(&with_ca);
        assert!(
            missing_ca.contains(&("listen.tls_client_ca_file".into(), ProblemKind::Environment))
        );
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/client-ca.pem"),
            &ca,
        )
        .unwrap();
        let shared = problems(&with_ca);
        assert_eq!(
            shared,
            [("team[1].client_cert_san".into(), ProblemKind::File)]
        );
    }
}
