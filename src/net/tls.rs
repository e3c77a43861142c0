//! TLS to buyers: one rustls client config per exchange (the built-in web roots plus the
//! operator's `[tls] ca_files`), one rustls connection per buyer connection. rustls is sans-IO
//! like the rest of the core: the worker moves its bytes.

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Build the client config: web roots and each PEM file's certificates as trust anchors.
pub fn client_config(ca_files: &[PathBuf]) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for path in ca_files {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {}", path.display(), e))?;
        let mut found = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| format!("{}: {}", path.display(), e))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: not a usable CA certificate: {}", path.display(), e))?;
            found += 1;
        }
        if found == 0 {
            return Err(format!("{}: no PEM certificate in it", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A new client session for `host` (a DNS name or an IP address).
pub fn connect(config: &Arc<ClientConfig>, host: &str) -> io::Result<ClientConnection> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    ClientConnection::new(config.clone(), name).map_err(io::Error::other)
}
