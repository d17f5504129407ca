//! The byte streams Kafka frames travel on: plain TCP, or TLS (rustls) over
//! TCP from either end; and reading the PEM files TLS is configured from.
//! Broker and client both speak through [`Stream`], so nothing above it
//! knows whether its bytes are encrypted.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection, encrypted or not.
pub enum Stream {
    Tcp(TcpStream),
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    TlsServer(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Stream::Tcp(_) => "TCP",
            Stream::TlsClient(_) => "TLS client",
            Stream::TlsServer(_) => "TLS server",
        };
        write!(f, "Stream({kind}, peer {:?})", self.tcp().peer_addr().ok())
    }
}

impl Stream {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(stream) => stream,
            Stream::TlsClient(stream) => stream.get_ref().0,
            Stream::TlsServer(stream) => stream.get_ref().0,
        }
    }
}

macro_rules! each_stream {
    ($self:ident, $stream:ident => $body:expr) => {
        match $self.get_mut() {
            Stream::Tcp($stream) => {
                let $stream = Pin::new($stream);
                $body
            }
            Stream::TlsClient($stream) => {
                let $stream = Pin::new($stream.as_mut());
                $body
            }
            Stream::TlsServer($stream) => {
                let $stream = Pin::new($stream.as_mut());
                $body
            }
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each_stream!(self, stream => stream.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each_stream!(self, stream => stream.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each_stream!(self, stream => stream.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(stream) => stream.is_write_vectored(),
            Stream::TlsClient(stream) => stream.is_write_vectored(),
            Stream::TlsServer(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_stream!(self, stream => stream.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_stream!(self, stream => stream.poll_shutdown(cx))
    }
}

/// Connects to `address` (`host:port`) within `timeout`, through TLS when
/// `tls` is given; the certificate must name `host`.
pub async fn connect(
    address: &str,
    tls: Option<&Arc<ClientConfig>>,
    timeout: Duration,
) -> io::Result<Stream> {
    let connecting = async {
        let tcp = TcpStream::connect(address).await?;
        tcp.set_nodelay(true)?;
        let Some(tls) = tls else {
            return Ok(Stream::Tcp(tcp));
        };
        let host = host_of(address);
        let name = ServerName::try_from(host.to_string()).map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("'{host}' is not a name a TLS certificate can carry: {error}"),
            )
        })?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
            .connect(name, tcp)
            .await
            .map_err(|error| {
                let hint = if error.kind() == io::ErrorKind::UnexpectedEof {
                    " (the broker closed the connection: is this listener plaintext?)"
                } else {
                    ""
                };
                io::Error::new(
                    error.kind(),
                    format!("TLS handshake with {address} failed: {error}{hint}"),
                )
            })?;
        Ok(Stream::TlsClient(Box::new(stream)))
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_elapsed| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting to {address} timed out"),
            )
        })?
}

/// The host of `host:port` (`[::1]:9092` gives `::1`).
fn host_of(address: &str) -> &str {
    let host = address
        .rsplit_once(':')
        .map_or(address, |(host, _port)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The cryptography TLS uses, named rather than taken from whatever
/// provider another crate in the process may install. *ring*, which SCRAM
/// uses too; rustls now prefers aws-lc-rs for its post-quantum key
/// exchange, which costs building AWS-LC from C sources (a later choice).
#[allow(deprecated)]
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file (a chain: the leaf first).
pub fn read_certificates(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| pem_error(path, "certificates", error))?;
    if certificates.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certificates)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> io::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| pem_error(path, "a private key", error))
}

fn pem_error(path: &Path, what: &str, error: rustls::pki_types::pem::Error) -> io::Error {
    match error {
        rustls::pki_types::pem::Error::Io(source) => io::Error::new(
            source.kind(),
            format!("cannot read {what} from {}: {source}", path.display()),
        ),
        other => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} holds no usable {what}: {other}", path.display()),
        ),
    }
}

/// The certificate authorities of `ca_file`, or the system's when `None`.
pub fn root_store(ca_file: Option<&Path>) -> io::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for certificate in read_certificates(path)? {
                roots.add(certificate).map_err(|error| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} holds a certificate that is not a usable CA: {error}",
                            path.display()
                        ),
                    )
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for certificate in found.certs {
                // A system store may hold certificates rustls cannot use;
                // they are skipped as every TLS client skips them.
                let _ = roots.add(certificate);
            }
            if roots.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "no CA certificates found on this system; name a CA file",
                ));
            }
        }
    }
    Ok(roots)
}

/// A client's TLS settings: which CAs to trust, and the certificate and key
/// to present when the server asks for one (mutual TLS).
pub fn client_config(
    ca_file: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> io::Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(root_store(ca_file)?);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((certificate, key)) => builder
            .with_client_auth_cert(read_certificates(certificate)?, read_private_key(key)?)
            .map_err(|error| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "certificate {} and key {} do not make a client identity: {error}",
                        certificate.display(),
                        key.display()
                    ),
                )
            })?,
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_the_port_and_brackets() {
        assert_eq!(host_of("localhost:9092"), "localhost");
        assert_eq!(host_of("127.0.0.1:1"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9092"), "::1");
    }
}
