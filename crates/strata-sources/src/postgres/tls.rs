//! TLS for PostgreSQL connections, with libpq's `sslmode` meanings:
//!
//! | `sslmode` | encryption | server certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | when the server offers it | not checked (as libpq) |
//! | `require` | always | not checked (as libpq) |
//! | `verify-ca`, `verify-full` | always | checked against `sslrootcert` (a PEM file) or the system's trusted roots, and the host name |
//!
//! `verify-ca` checks the host name too (rustls has no CA-only mode), so it is as strict as
//! `verify-full`. Connections to managed databases (RDS, Cloud SQL, Azure) should use
//! `verify-full` with the provider's CA bundle as `sslrootcert`.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// How a connection is secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Security {
    /// Plain TCP.
    Plain,
    /// Encrypted; the certificate is not checked (`prefer`, `require`).
    Encrypted,
    /// Encrypted and the certificate checked against these roots (`verify-*`); `None`:
    /// the system's trusted roots.
    Verified(Option<String>),
}

/// Splits Strata's TLS parameters off a connection URL: returns the URL tokio-postgres
/// understands (its `sslmode` limited to disable/prefer/require) and the security to use.
pub(crate) fn split_url(url: &str) -> Result<(String, Security), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), Security::Encrypted));
    };
    let mut kept = Vec::new();
    let mut mode = "prefer".to_string();
    let mut root: Option<String> = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "sslmode" => mode = v.to_ascii_lowercase(),
            "sslrootcert" => {
                root = Some(
                    percent_decode(v)
                        .map_err(|_| "`sslrootcert` is not a valid path".to_string())?,
                )
            }
            _ => kept.push(pair),
        }
    }
    let (pg_mode, security) = match mode.as_str() {
        "disable" => ("disable", Security::Plain),
        "allow" | "prefer" => ("prefer", Security::Encrypted),
        "require" => ("require", Security::Encrypted),
        "verify-ca" | "verify-full" => ("require", Security::Verified(root)),
        other => {
            return Err(format!(
                "unknown sslmode `{other}`; use disable, prefer, require, verify-ca or verify-full"
            ));
        }
    };
    kept.push(match pg_mode {
        "disable" => "sslmode=disable",
        "prefer" => "sslmode=prefer",
        _ => "sslmode=require",
    });
    Ok((format!("{base}?{}", kept.join("&")), security))
}

fn percent_decode(s: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out)
}

/// The rustls client configuration for `security` (not called for [`Security::Plain`]).
pub(crate) fn client_config(security: &Security) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    Ok(match security {
        Security::Verified(root) => {
            let mut roots = rustls::RootCertStore::empty();
            match root {
                Some(path) => {
                    let certs = CertificateDer::pem_file_iter(path)
                        .map_err(|e| format!("cannot read sslrootcert {path}: {e}"))?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| format!("sslrootcert {path} is not PEM certificates: {e}"))?;
                    if certs.is_empty() {
                        return Err(format!("sslrootcert {path} holds no certificate"));
                    }
                    for c in certs {
                        roots
                            .add(c)
                            .map_err(|e| format!("sslrootcert {path}: {e}"))?;
                    }
                }
                None => {
                    let found = rustls_native_certs::load_native_certs();
                    for c in found.certs {
                        let _ = roots.add(c);
                    }
                    if roots.is_empty() {
                        return Err(
                            "no trusted root certificates found on this system; give the server's CA with `sslrootcert=/path/ca.pem`".into(),
                        );
                    }
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
            .with_no_client_auth(),
    })
}

/// Accepts any server certificate (libpq's `prefer`/`require`), still checking that the
/// server holds the key of the certificate it presents.
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strata_tls_parameters_are_split_off() {
        assert_eq!(
            split_url("postgres://u@h/db").unwrap(),
            ("postgres://u@h/db".to_string(), Security::Encrypted)
        );
        assert_eq!(
            split_url("postgres://u@h/db?sslmode=disable&application_name=x").unwrap(),
            (
                "postgres://u@h/db?application_name=x&sslmode=disable".to_string(),
                Security::Plain
            )
        );
        assert_eq!(
            split_url("postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem").unwrap(),
            (
                "postgres://u@h/db?sslmode=require".to_string(),
                Security::Verified(Some("/etc/ca.pem".into()))
            )
        );
        assert!(
            split_url("postgres://u@h/db?sslmode=sometimes")
                .unwrap_err()
                .contains("unknown sslmode `sometimes`")
        );
    }
}
