//! TLS for the broker: the server side of its TLS listeners, and the client
//! side of its connections to other brokers, both built from the PEM files
//! of [`TlsConfig`] and rebuilt from them on [`Tls::reload`] (SIGHUP), so a
//! renewed certificate takes effect without a restart. Connections already
//! open keep the certificate they were made with.
//!
//! Client certificates are asked for on SSL listeners only, as
//! `client_auth` says; a SASL_SSL listener's clients prove who they are
//! with SASL (Kafka's rule since KIP-684).

use std::io;
use std::sync::{Arc, RwLock};

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};
use strata_protocol::transport;
use tokio_rustls::TlsAcceptor;

use crate::config::{ClientAuth, TlsConfig};

/// The broker's TLS settings, as last loaded.
pub struct Tls {
    config: TlsConfig,
    loaded: RwLock<Loaded>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("config", &self.config).finish()
    }
}

struct Loaded {
    /// For SSL listeners: client certificates as `client_auth` says.
    server: Arc<ServerConfig>,
    /// For SASL_SSL listeners and `/metrics`: no client certificate.
    server_for_sasl: Arc<ServerConfig>,
    /// For the controller listener: a certificate from the CA, always.
    server_mutual: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

/// Whom a TLS listener asks for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peers {
    /// Kafka clients of an SSL listener: as `--tls-client-auth` says.
    Clients,
    /// Clients that prove who they are otherwise (SASL), or not at all
    /// (`/metrics`): no certificate asked for.
    Anyone,
    /// Brokers and voters on the controller listener: a certificate signed
    /// by the CA, always.
    Brokers,
}

impl Tls {
    /// Reads the certificate, key and CA files; fails naming the file at fault.
    pub fn load(config: &TlsConfig) -> io::Result<Tls> {
        Ok(Tls {
            config: config.clone(),
            loaded: RwLock::new(load(config)?),
        })
    }

    /// Reads the files again. On failure the settings in use stay.
    pub fn reload(&self) -> io::Result<()> {
        let loaded = load(&self.config)?;
        *self.loaded.write().expect("tls lock") = loaded;
        Ok(())
    }

    /// Accepts TLS connections from `peers` with the current certificate.
    pub fn acceptor(&self, peers: Peers) -> TlsAcceptor {
        let loaded = self.loaded.read().expect("tls lock");
        let config = match peers {
            Peers::Clients => &loaded.server,
            Peers::Anyone => &loaded.server_for_sasl,
            Peers::Brokers => &loaded.server_mutual,
        };
        TlsAcceptor::from(Arc::clone(config))
    }

    /// Connects to other brokers: trusts the CA, and presents this broker's
    /// certificate to a listener that asks for one.
    pub fn client(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.loaded.read().expect("tls lock").client)
    }
}

fn load(config: &TlsConfig) -> io::Result<Loaded> {
    let client = transport::client_config(
        config.ca.as_deref(),
        Some((&config.certificate, &config.private_key)),
    )?;
    Ok(Loaded {
        server: server_config(config, config.client_auth)?,
        server_for_sasl: server_config(config, ClientAuth::None)?,
        server_mutual: server_config(config, ClientAuth::Required)?,
        client,
    })
}

fn server_config(config: &TlsConfig, client_auth: ClientAuth) -> io::Result<Arc<ServerConfig>> {
    let certificates = transport::read_certificates(&config.certificate)?;
    let key = transport::read_private_key(&config.private_key)?;
    let provider = transport::crypto_provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Requested | ClientAuth::Required => {
            let roots = Arc::new(transport::root_store(config.ca.as_deref())?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = if client_auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|error| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("cannot check client certificates: {error}"),
                )
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(certificates, key)
        .map(Arc::new)
        .map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "certificate {} and key {} do not go together: {error}",
                    config.certificate.display(),
                    config.private_key.display()
                ),
            )
        })
}
