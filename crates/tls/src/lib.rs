//! TLS settings, rustls with the ring provider. Client side, for airlock's MQTT connections
//! (the IT-side sink to a business broker, the OT-side subscriber to a plant broker): the
//! server's certificate verified against a configured CA file (PEM) or, when none is given, the
//! Mozilla roots, and an optional client certificate for brokers that require one (mutual
//! TLS). Server side, for the web dashboard: its certificate chain and key. It reads the named
//! files and nothing else; errors name the file. [`mqtt`] holds what both MQTT clients share
//! (opening the connection and the framing), none of it able to send a message.

pub mod mqtt;

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A server configuration presenting `cert` (the chain, PEM) with `key` (PEM); HTTP/1.1 only.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, String> {
    let (chain, key) = read_identity(cert, key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate {} with the key: {e}", cert.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A certificate chain and its private key, from PEM files.
fn read_identity(cert: &Path, key: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let read = |p: &Path, e: &dyn std::fmt::Display| format!("read {}: {e}", p.display());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read(cert, &e))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read(key, &e))?;
    Ok((chain, key))
}

/// A client configuration trusting `ca_file` (or the Mozilla roots), presenting
/// `client_cert` (certificate chain and key, PEM) when given.
pub fn client_config(
    ca_file: Option<&Path>,
    client_cert: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs =
                CertificateDer::pem_file_iter(path).map_err(|e| format!("read the CA file {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("read the CA file {}: {e}", path.display()))?;
                roots.add(cert).map_err(|e| format!("a certificate in {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("the CA file {} holds no certificate", path.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let (chain, key) = read_identity(cert, key)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("the client certificate: {e}"))
        }
    }
}
