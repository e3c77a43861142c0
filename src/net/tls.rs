//! TLS with rustls, sans-IO like the rest of the core: the worker moves its bytes.
//!
//! To buyers: one client config per exchange (the built-in web roots plus the operator's
//! `[tls] ca_files`), one rustls connection per buyer connection. From sellers, when
//! `[server.tls]` is set: one server config (the certificate chain and key of `cert_file` and
//! `key_file`, ALPN `http/1.1`), one rustls connection per seller connection.

use crate::config::{read_regular_file, MAX_PEM_FILE_BYTES};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which file of `[server.tls]` an error is about, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerTlsError {
    CertFile(String),
    KeyFile(String),
}

/// Build the seller listener's server config from a PEM certificate chain (end-entity first)
/// and a PEM private key (PKCS#8, PKCS#1 or SEC1). Both files are read before either is
/// judged, so that a problem with each is reported at once.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<SellerTls, Vec<ServerTlsError>> {
    use ServerTlsError::{CertFile, KeyFile};
    let cert_err = |m: String| CertFile(format!("{}: {}", cert_file.display(), m));
    let key_err = |m: String| KeyFile(format!("{}: {}", key_file.display(), m));
    let chain = (|| {
        let pem = read_regular_file(cert_file, MAX_PEM_FILE_BYTES)
            .map_err(|e| cert_err(e.to_string()))?;
        let mut chain = Vec::new();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            chain.push(cert.map_err(|e| cert_err(format!("not a PEM certificate chain: {}", e)))?);
        }
        if chain.is_empty() {
            return Err(cert_err("no PEM certificate in it".to_string()));
        }
        Ok(chain)
    })();
    let key = (|| {
        let pem =
            read_regular_file(key_file, MAX_PEM_FILE_BYTES).map_err(|e| key_err(e.to_string()))?;
        // A passphrase-protected key (PKCS#8 `ENCRYPTED PRIVATE KEY`, or an old-style key
        // with `Proc-Type: 4,ENCRYPTED`) is not read: said so, rather than "no key".
        let encrypted = |label: &[u8]| pem.windows(label.len()).any(|w| w == label);
        if encrypted(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || encrypted(b"4,ENCRYPTED") {
            return Err(key_err(
                "an encrypted private key: give it unencrypted \
                 (openssl pkey -in KEY -out PLAIN.key), readable by the exchange only"
                    .to_string(),
            ));
        }
        rustls_pemfile::private_key(&mut pem.as_slice())
            .map_err(|e| key_err(format!("not a PEM private key: {}", e)))?
            .ok_or_else(|| key_err("no PEM private key in it".to_string()))
    })();
    let (chain, key) = match (chain, key) {
        (Ok(c), Ok(k)) => (c, k),
        (c, k) => return Err(c.err().into_iter().chain(k.err()).collect()),
    };
    let validity = chain.first().and_then(|c| validity(c));
    let fingerprint = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for c in &chain {
            c.as_ref().hash(&mut h);
        }
        key.secret_der().hash(&mut h);
        h.finish()
    };
    let config = server_config_from(chain, key, cert_err, key_err).map_err(|e| vec![e])?;
    Ok(SellerTls {
        config,
        validity,
        fingerprint,
    })
}

/// The seller listener's TLS: its rustls config and when its certificate is valid.
pub struct SellerTls {
    pub config: Arc<ServerConfig>,
    /// The end-entity certificate's notBefore and notAfter, in seconds since the Unix epoch
    /// (None: the dates could not be read; rustls still took the certificate).
    pub validity: Option<(u64, u64)>,
    /// A hash of the chain and the key as loaded: a reload tells a certificate replaced at the
    /// same paths by it.
    pub fingerprint: u64,
}

/// A DER certificate's notBefore and notAfter, in seconds since the Unix epoch.
pub fn validity(cert: &[u8]) -> Option<(u64, u64)> {
    use x509_cert::der::Decode;
    let c = x509_cert::Certificate::from_der(cert).ok()?;
    let v = c.tbs_certificate().validity();
    Some((
        v.not_before.to_unix_duration().as_secs(),
        v.not_after.to_unix_duration().as_secs(),
    ))
}

fn server_config_from(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    cert_err: impl Fn(String) -> ServerTlsError,
    key_err: impl Fn(String) -> ServerTlsError,
) -> Result<Arc<ServerConfig>, ServerTlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InvalidCertificate(_) => {
                cert_err(format!("unusable certificate: {}", e))
            }
            rustls::Error::InconsistentKeys(_) => key_err(format!(
                "does not match the certificate of server.tls.cert_file: {}",
                e
            )),
            _ => key_err(format!("unusable private key: {}", e)),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Build the client config: web roots and each PEM file's certificates as trust anchors.
pub fn client_config(ca_files: &[PathBuf]) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for path in ca_files {
        let pem = read_regular_file(path, MAX_PEM_FILE_BYTES)
            .map_err(|e| format!("{}: {}", path.display(), e))?;
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

/// Why a TLS session with a buyer failed, in words an operator acts on. rustls says some of
/// these only by its type names (`UnknownIssuer`); the rest keep rustls's own text.
pub fn reason(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let cert = |what: &str| format!("the buyer's certificate {what}");
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => {
                cert("is not signed by a trusted CA (add the CA that signed it to tls.ca_files)")
            }
            C::BadEncoding => cert("cannot be read"),
            C::Expired => cert("has expired"),
            C::NotValidYet => cert("is not valid yet"),
            C::Revoked => cert("has been revoked"),
            C::BadSignature => cert("has a signature that does not verify"),
            C::UnsupportedSignatureAlgorithmContext { .. }
            | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                cert("is signed with an algorithm not supported")
            }
            C::ExpiredContext { not_after, .. } => {
                cert(&format!("expired on {}", utc(not_after.as_secs())))
            }
            C::NotValidYetContext { not_before, .. } => cert(&format!(
                "is not valid before {}",
                utc(not_before.as_secs())
            )),
            C::NotValidForName => cert("is not for this host name"),
            C::InvalidPurpose => cert("is not for a TLS server"),
            C::UnhandledCriticalExtension => cert("has a critical extension not supported"),
            C::Other(o) if o.to_string().contains("CaUsedAsEndEntity") => {
                cert("is a CA certificate, not a server's")
            }
            C::Other(o) => format!("the buyer's certificate is refused: {o}"),
            other => other.to_string(),
        },
        rustls::Error::NoCertificatesPresented => "the buyer sent no certificate".to_string(),
        rustls::Error::AlertReceived(a) => {
            format!("the buyer ended the handshake with the alert {a:?}")
        }
        rustls::Error::PeerIncompatible(_) => {
            "the buyer has no TLS version or cipher suite in common with the exchange".to_string()
        }
        rustls::Error::InvalidMessage(_) => {
            "the buyer's answer is not TLS (is the port plain HTTP?)".to_string()
        }
        other => other.to_string(),
    }
}

/// Seconds since the Unix epoch as a UTC date and time to the minute.
pub fn utc(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(
            || format!("{secs} s after 1970"),
            |d| d.format("%Y-%m-%d %H:%M UTC").to_string(),
        )
}

/// A new client session for `host` (a DNS name or an IP address).
pub fn connect(config: &Arc<ClientConfig>, host: &str) -> io::Result<ClientConnection> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    ClientConnection::new(config.clone(), name).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::UnixTime;
    use rustls::CertificateError as C;

    #[test]
    fn a_failed_buyer_handshake_is_told_in_words_not_type_names() {
        let said = |e: rustls::Error| reason(&e);
        assert_eq!(
            said(rustls::Error::InvalidCertificate(C::UnknownIssuer)),
            "the buyer's certificate is not signed by a trusted CA (add the CA that signed it \
             to tls.ca_files)"
        );
        let at = |s| UnixTime::since_unix_epoch(std::time::Duration::from_secs(s));
        assert_eq!(
            said(rustls::Error::InvalidCertificate(C::ExpiredContext {
                time: at(1_767_312_000),
                not_after: at(1_767_225_600),
            })),
            "the buyer's certificate expired on 2026-01-01 00:00 UTC"
        );
        assert_eq!(
            said(rustls::Error::InvalidCertificate(C::NotValidYetContext {
                time: at(1_767_139_200),
                not_before: at(1_767_225_600),
            })),
            "the buyer's certificate is not valid before 2026-01-01 00:00 UTC"
        );
        assert_eq!(
            said(rustls::Error::AlertReceived(
                rustls::AlertDescription::HandshakeFailure
            )),
            "the buyer ended the handshake with the alert HandshakeFailure"
        );
        for e in [
            C::BadEncoding,
            C::Expired,
            C::NotValidYet,
            C::Revoked,
            C::BadSignature,
            C::NotValidForName,
            C::InvalidPurpose,
            C::UnhandledCriticalExtension,
        ] {
            let debug = format!("{e:?}");
            let text = said(rustls::Error::InvalidCertificate(e));
            assert!(text.starts_with("the buyer's certificate "), "{text}");
            assert!(!text.contains(&debug), "{text}");
        }
    }
}
