//! TLS for PostgreSQL connections, the libpq way, with rustls (pure Rust:
//! no shared library is added to the binary).
//!
//! The settings come from the URL's query (`sslmode`, `sslrootcert`,
//! `sslcert`, `sslkey`), else from `PGSSLMODE`, `PGSSLROOTCERT`,
//! `PGSSLCERT`, `PGSSLKEY`, else libpq's defaults: `sslmode=prefer`,
//! `~/.postgresql/root.crt`, `~/.postgresql/postgresql.crt` and `.key`.
//!
//! | sslmode | TLS | the server's certificate |
//! | --- | --- | --- |
//! | disable | never | - |
//! | allow | plain text first, TLS if the server refuses it | as require |
//! | prefer | TLS if the server has it, else plain text; plain text too if the server refuses the TLS session | as require |
//! | require | always | chain checked only if a root CA file exists (then as verify-ca) |
//! | verify-ca | always | chain checked against the root CA file |
//! | verify-full | always | chain and host name checked |
//!
//! Unlike libpq, a file named explicitly (URL or environment) that does not
//! exist is an error in every mode but disable, not just in verify-*.

use std::fmt;
use std::future::Future;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use ::postgres::config::SslMode;
use ::postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain text only.
    Disable,
    /// Plain text first, TLS if the server refuses plain text.
    Allow,
    /// TLS first, plain text if the server has no TLS or refuses the TLS session.
    Prefer,
    /// TLS, the certificate checked only if a root CA file exists.
    Require,
    /// TLS, the certificate chain checked against the root CA file.
    VerifyCa,
    /// TLS, the certificate chain and the host name checked.
    VerifyFull,
}

impl Mode {
    fn parse(text: &str) -> Option<Mode> {
        Some(match text {
            "disable" => Mode::Disable,
            "allow" => Mode::Allow,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            _ => return None,
        })
    }

    fn verifies(self) -> bool {
        matches!(self, Mode::VerifyCa | Mode::VerifyFull)
    }
}

/// The TLS settings given in a URL's query.
#[derive(Debug, Default)]
pub struct UrlParams {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    sslcert: Option<String>,
    sslkey: Option<String>,
}

/// Takes the TLS parameters out of `url`'s query (the postgres driver knows
/// only some of them): the URL without them, and their values.
pub fn take_params(url: &str) -> (String, UrlParams) {
    let mut params = UrlParams::default();
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[after_scheme..]
        .rfind('@')
        .map_or(after_scheme, |i| after_scheme + i + 1);
    let Some(q) = url[authority_end..].find('?').map(|i| authority_end + i) else {
        return (url.to_owned(), params);
    };
    let mut kept = Vec::new();
    for pair in url[q + 1..].split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "sslmode" => &mut params.sslmode,
            "sslrootcert" => &mut params.sslrootcert,
            "sslcert" => &mut params.sslcert,
            "sslkey" => &mut params.sslkey,
            _ => {
                kept.push(pair);
                continue;
            }
        };
        *slot = Some(percent_decode(value));
    }
    let mut rest = url[..q].to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    (rest, params)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The TLS settings of a connection, resolved and loaded.
#[derive(Clone)]
pub struct Tls {
    mode: Mode,
    /// None with sslmode=disable.
    config: Option<Arc<ClientConfig>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("mode", &self.mode).finish()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.dir)
        })
}

/// A file setting: (path, whether it was named explicitly).
fn file_setting(url: &Option<String>, var: &str, default: &str) -> Option<(PathBuf, bool)> {
    match url.clone().or_else(|| env(var)) {
        Some(path) => Some((PathBuf::from(path), true)),
        None => home().map(|h| (h.join(".postgresql").join(default), false)),
    }
}

impl Tls {
    /// The settings of `params` completed from the environment and libpq's
    /// defaults, with the files loaded; the error is a reason for the user.
    /// Over unix sockets only (`unix_socket`) no file is needed: they never
    /// use TLS.
    pub fn resolve(params: &UrlParams, unix_socket: bool) -> Result<Tls, String> {
        let mode = match params.sslmode.clone().or_else(|| env("PGSSLMODE")) {
            None => Mode::Prefer,
            Some(text) => Mode::parse(&text).ok_or_else(|| {
                format!(
                    "invalid sslmode \"{text}\" (disable, allow, prefer, require, verify-ca or verify-full)"
                )
            })?,
        };
        if mode == Mode::Disable || unix_socket {
            return Ok(Tls { mode, config: None });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = load_roots(params, mode)?;
        let verifier: Arc<dyn ServerCertVerifier> = match roots {
            None => Arc::new(NoVerification(provider.signature_verification_algorithms)),
            Some(roots) => {
                let inner = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| format!("cannot use the root certificates: {e}"))?;
                Arc::new(ChainVerification {
                    inner,
                    check_name: mode == Mode::VerifyFull,
                })
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match load_client_cert(params)? {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("cannot use the client certificate: {e}"))?,
            None => builder.with_no_client_auth(),
        };
        // What PostgreSQL 17 expects with sslnegotiation=direct; harmless otherwise.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Tls {
            mode,
            config: Some(Arc::new(config)),
        })
    }

    /// sslmode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The driver's TLS mode for the first attempt, and for the second one
    /// (if any) when the server refused the first session with an error.
    /// Unix sockets never use TLS, as with libpq.
    pub fn attempts(&self, unix_socket: bool) -> (SslMode, Option<SslMode>) {
        match self.mode {
            _ if unix_socket => (SslMode::Disable, None),
            Mode::Disable => (SslMode::Disable, None),
            Mode::Allow => (SslMode::Disable, Some(SslMode::Require)),
            Mode::Prefer => (SslMode::Prefer, Some(SslMode::Disable)),
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => (SslMode::Require, None),
        }
    }

    /// A connector for the driver; `used` is set when it starts a TLS
    /// session.
    pub fn connector(&self, used: Arc<AtomicBool>) -> MakeRustls {
        MakeRustls {
            config: self.config.clone(),
            used,
        }
    }
}

/// The root certificates to check the server's chain against, or None for
/// no check.
fn load_roots(params: &UrlParams, mode: Mode) -> Result<Option<RootCertStore>, String> {
    let Some((path, explicit)) = file_setting(&params.sslrootcert, "PGSSLROOTCERT", "root.crt")
    else {
        if mode.verifies() {
            return Err(format!(
                "sslmode={} needs a root certificate: give sslrootcert or PGSSLROOTCERT (no home directory for ~/.postgresql/root.crt)",
                mode_name(mode)
            ));
        }
        return Ok(None);
    };
    let mut roots = RootCertStore::empty();
    if explicit && path == Path::new("system") {
        if mode != Mode::VerifyFull {
            return Err(format!(
                "weak sslmode \"{}\" may not be used with sslrootcert=system (use \"verify-full\")",
                mode_name(mode)
            ));
        }
        crate::backend::tls_files::check_trust_store_env()?;
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(
                "sslrootcert=system: no certificates in the system store (SSL_CERT_FILE, SSL_CERT_DIR)"
                    .to_owned(),
            );
        }
        return Ok(Some(roots));
    }
    if !path.exists() {
        if explicit {
            return Err(format!(
                "root certificate file \"{}\" does not exist",
                path.display()
            ));
        }
        if mode.verifies() {
            return Err(format!(
                "root certificate file \"{}\" does not exist: sslmode={} needs one (sslrootcert or PGSSLROOTCERT), or use sslmode=require to skip the check",
                path.display(),
                mode_name(mode)
            ));
        }
        return Ok(None);
    }
    let certs = crate::backend::tls_files::read(&path)
        .and_then(|pem| {
            CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())
        })
        .map_err(|e| {
            format!(
                "cannot read root certificate file \"{}\": {e}",
                path.display()
            )
        })?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "no usable certificate in root certificate file \"{}\"",
            path.display()
        ));
    }
    Ok(Some(roots))
}

type ClientCert = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The client certificate and its key, if there is one.
fn load_client_cert(params: &UrlParams) -> Result<Option<ClientCert>, String> {
    let cert = file_setting(&params.sslcert, "PGSSLCERT", "postgresql.crt");
    let key = file_setting(&params.sslkey, "PGSSLKEY", "postgresql.key");
    for (path, explicit) in [&cert, &key].into_iter().flatten() {
        if *explicit && !path.exists() {
            return Err(format!(
                "certificate or key file \"{}\" does not exist",
                path.display()
            ));
        }
    }
    let Some((cert, _)) = cert.filter(|(path, _)| path.exists()) else {
        return Ok(None);
    };
    let Some((key, _)) = key.filter(|(path, _)| path.exists()) else {
        return Err(format!(
            "certificate file \"{}\" has no private key file (sslkey or PGSSLKEY)",
            cert.display()
        ));
    };
    let chain = crate::backend::tls_files::read(&cert)
        .and_then(|pem| {
            CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())
        })
        .map_err(|e| format!("cannot read certificate file \"{}\": {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in file \"{}\"", cert.display()));
    }
    // As libpq: a key that others can read is refused (0640 if root owns it).
    let meta = std::fs::metadata(&key)
        .map_err(|e| format!("cannot read private key file \"{}\": {e}", key.display()))?;
    let loose = if meta.uid() == 0 { 0o037 } else { 0o077 };
    if meta.mode() & loose != 0 {
        return Err(format!(
            "private key file \"{}\" has group or world access; it must be u=rw (0600) or less, or u=rw,g=r (0640) if owned by root",
            key.display()
        ));
    }
    let key_der = crate::backend::tls_files::read(&key)
        .and_then(|pem| PrivateKeyDer::from_pem_slice(&pem).map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot read private key file \"{}\": {e}", key.display()))?;
    Ok(Some((chain, key_der)))
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Disable => "disable",
        Mode::Allow => "allow",
        Mode::Prefer => "prefer",
        Mode::Require => "require",
        Mode::VerifyCa => "verify-ca",
        Mode::VerifyFull => "verify-full",
    }
}

/// require without a root CA file: any certificate, but the handshake's
/// signatures are still checked (the session is encrypted, not authenticated).
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// verify-ca (the chain only) and verify-full (the chain and the name).
#[derive(Debug)]
struct ChainVerification {
    inner: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for ChainVerification {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            // The name is checked after the chain: a wrong name means the
            // chain was good.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The postgres driver's TLS connector on rustls.
#[derive(Clone)]
pub struct MakeRustls {
    config: Option<Arc<ClientConfig>>,
    used: Arc<AtomicBool>,
}

/// [`MakeRustls`] for one host.
pub struct RustlsConnect {
    config: Option<Arc<ClientConfig>>,
    host: String,
    used: Arc<AtomicBool>,
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        Ok(RustlsConnect {
            config: self.config.clone(),
            host: domain.to_owned(),
            used: Arc::clone(&self.used),
        })
    }
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let config = self
                .config
                .ok_or_else(|| io::Error::other("TLS is disabled (sslmode=disable)"))?;
            let name = ServerName::try_from(self.host.clone()).map_err(|_| {
                io::Error::other(format!("\"{}\" is not a host name for TLS", self.host))
            })?;
            self.used.store(true, Ordering::Relaxed);
            let connector = tokio_rustls::TlsConnector::from(config);
            match connector.connect(name, stream).await {
                Ok(stream) => Ok(RustlsStream(stream)),
                Err(e) => Err(io::Error::other(handshake_error(&self.host, &e))),
            }
        })
    }
}

/// One line naming the host and why the handshake failed.
fn handshake_error(host: &str, e: &io::Error) -> String {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(why)) => {
            let why = match why {
                CertificateError::UnknownIssuer => {
                    "no CA in the root certificate file signed it".to_owned()
                }
                CertificateError::BadSignature => {
                    "its signature does not match the CA in the root certificate file".to_owned()
                }
                other => other.to_string(),
            };
            format!("the certificate of {host} is not accepted: {why}")
        }
        Some(why) => format!("TLS with {host} failed: {why}"),
        None => format!("TLS with {host} failed: {e}"),
    }
}

/// A TLS session with the server.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    /// No channel binding: SCRAM's `channel_binding=prefer` (the default)
    /// goes without it.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_params_are_taken_out_of_the_url() {
        let (url, params) = take_params(
            "postgres://u:p%3Fw@h:5/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem",
        );
        assert_eq!(url, "postgres://u:p%3Fw@h:5/db?application_name=x");
        assert_eq!(params.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(params.sslrootcert.as_deref(), Some("/tmp/ca.pem"));
        let (url, params) = take_params("postgres://h/db?sslkey=k");
        assert_eq!(url, "postgres://h/db");
        assert_eq!(params.sslkey.as_deref(), Some("k"));
        assert_eq!(take_params("postgres://h/db").0, "postgres://h/db");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41%"), "A%");
    }
}
