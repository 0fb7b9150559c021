//! TLS on the gRPC listener (rustls), optional client certificates, and reloading of the
//! certificate, key and client CA when their files change.

use std::{path::PathBuf, sync::Arc};

use tokio_rustls::rustls::{
    RootCertStore, ServerConfig,
    crypto::aws_lc_rs,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};

use super::reload::{Reloadable, Trigger};

/// The files behind the listener's TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates are verified against this bundle when set (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {0}")]
    Read(PathBuf),
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("{0} holds no PEM private key")]
    NoKey(PathBuf),
    #[error("the TLS configuration is invalid: {0}")]
    Invalid(String),
}

impl TlsFiles {
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.cert.clone(), self.key.clone()];
        paths.extend(self.client_ca.clone());
        paths
    }

    /// Builds the rustls configuration from the files as they are now.
    pub fn load(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let certs = read_certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| match e {
            tokio_rustls::rustls::pki_types::pem::Error::Io(_) => TlsError::Read(self.key.clone()),
            _ => TlsError::NoKey(self.key.clone()),
        })?;
        let provider = Arc::new(aws_lc_rs::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid(e.to_string()))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| TlsError::Invalid(e.to_string()))?;
                }
                // A caller without a certificate may still present a bearer token; one with a
                // certificate must present a valid one.
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| TlsError::Invalid(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Invalid(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

fn read_certs(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|_| TlsError::Read(path.clone()))?;
    let certs: Vec<_> = iter.filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.clone()));
    }
    Ok(certs)
}

/// The listener's TLS configuration, reloaded when its files change.
pub type ListenerTls = Reloadable<Arc<ServerConfig>, TlsError>;

impl TlsFiles {
    /// Loads the files once, and again whenever they change.
    pub async fn reloadable(self) -> Result<ListenerTls, TlsError> {
        let paths = self.paths();
        Reloadable::new(
            "TLS certificate, key and client CA",
            Trigger::Files(paths),
            move || {
                let loaded = self.load();
                async move { loaded }
            },
        )
        .await
    }
}
