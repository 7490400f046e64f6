//! TLS clients of the gateway's proxy listener: the fixture certificate (`localhost`) trusted,
//! an ALPN choice, and the fixture client certificate (`payments.internal`) for mutual TLS.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The path of a file in `tests/fixtures`.
pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `[listen]` lines for TLS with the fixture certificate; with the fixture client CA when
/// `mutual`.
pub fn listen_lines(mutual: bool) -> String {
    let mut lines = format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        fixture("localhost.pem"),
        fixture("localhost.key")
    );
    if mutual {
        lines += &format!("tls_client_ca_file = \"{}\"\n", fixture("client-ca.pem"));
    }
    lines
}

/// A client config trusting the fixture certificate, offering `alpn` (none when empty),
/// presenting the fixture client certificate when `client_cert`.
pub fn client_config(alpn: &[&[u8]], client_cert: bool) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(fixture("localhost.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client_cert {
        false => builder.with_no_client_auth(),
        true => {
            let certs = CertificateDer::pem_file_iter(fixture("client.pem"))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(fixture("client.key")).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// A TLS connection to `addr` with `config`; the server must agree to `alpn` (or choose none).
pub async fn connect(
    addr: SocketAddr,
    config: rustls::ClientConfig,
    alpn: Option<&[u8]>,
) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), alpn);
    tls
}
