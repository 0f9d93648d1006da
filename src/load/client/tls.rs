//! TLS for the load clients: the system's roots plus `--cacert`, ring, ALPN per protocol.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::Path;
use std::sync::Arc;

/// A client config trusting the system's CA certificates and those in `cacert`, offering `alpn`.
pub fn client_config(
    cacert: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    // Certificates the system store cannot parse are skipped, as browsers do; a missing store
    // only matters when no --cacert is given, and then the handshake errors say so.
    let system = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(system.certs);
    if let Some(path) = cacert {
        add_pem_file(&mut roots, path)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn add_pem_file(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), String> {
    let unreadable = |e: &dyn std::fmt::Display| format!("--cacert {}: {e}", path.display());
    let mut added = 0;
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
        let cert = cert.map_err(|e| unreadable(&e))?;
        roots.add(cert).map_err(|e| unreadable(&e))?;
        added += 1;
    }
    if added == 0 {
        return Err(unreadable(&"no PEM certificate in the file"));
    }
    Ok(())
}
