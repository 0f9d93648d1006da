//! TLS material: loading certificate/key pairs (with errors naming the file and the fault),
//! certificate sets and choosing one by SNI (exact name, then the longest wildcard, then the
//! first as default), the resolvers of the TLS listeners, the handshake counters, and making
//! development certificates (a local CA and a localhost leaf it signs).
//!
//! The same [`SniResolver`] serves the TCP listeners (TLS 1.2/1.3, ALPN h2 and http/1.1) and
//! the QUIC listener (TLS 1.3, ALPN h3); reload swaps its certificate set in place.

use crate::metrics::counter;
use arc_swap::ArcSwap;
use prometheus::IntCounter;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

/// TLS handshakes, TCP and QUIC.
pub struct TlsMetrics {
    pub client_hellos: IntCounter,
    pub handshakes: IntCounter,
}

pub static TLS_METRICS: LazyLock<TlsMetrics> = LazyLock::new(|| {
    TlsMetrics {
    client_hellos: counter(
        "tls_client_hellos_total",
        "TLS handshakes begun (ClientHello received), TCP and QUIC.",
    ),
    handshakes: counter(
        "tls_handshakes_total",
        "TLS handshakes completed (TCP listeners and QUIC); begun minus completed failed or are in progress.",
    ),
}
});

/// Registers the TLS metrics (at start, so they show before the first handshake).
pub fn register_metrics() {
    LazyLock::force(&TLS_METRICS);
}

/// One SNI resolver per TLS listener, keyed by address so a reload can swap certificates.
pub type Resolvers = HashMap<SocketAddr, Arc<SniResolver>>;

/// A loaded certificate chain and key, with the DNS names and IPs it covers.
pub struct LoadedCertificate {
    pub cert_path: PathBuf,
    pub names: Vec<String>,
    pub key: Arc<CertifiedKey>,
}

impl fmt::Debug for LoadedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCertificate")
            .field("cert_path", &self.cert_path)
            .field("names", &self.names)
            .finish()
    }
}

impl TlsError {
    /// The fault is in the private key file (so a config error names the `key`, not `cert`).
    pub fn is_about_key(&self) -> bool {
        matches!(
            self,
            TlsError::ReadKey { .. } | TlsError::NoKey { .. } | TlsError::UnsupportedKey { .. }
        )
    }
}

/// Installs ring as rustls' process-wide crypto provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why certificate material could not be loaded or made; each names the file and the fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate {}: {source} (for development certificates run `parapet certs dev`)", .path.display())]
    ReadCertificate {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a PEM certificate chain: {source}", .path.display())]
    NotPem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{}: no CERTIFICATE block found", .0.display())]
    NoCertificate(PathBuf),
    #[error("cannot read private key {}: {source}", .path.display())]
    ReadKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {source}", .path.display())]
    NoKey {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{}: unsupported private key: {source}", .path.display())]
    UnsupportedKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{} and {} do not belong together: {source}", .cert.display(), .key.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("{}: unreadable certificate: {reason}", .path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("cannot create {}: {source}", .path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Loads a PEM chain and key and checks that they belong together.
pub fn load_certificate(cert_path: &Path, key_path: &Path) -> Result<LoadedCertificate, TlsError> {
    install_crypto_provider();
    let cert_pem = std::fs::read(cert_path).map_err(|source| TlsError::ReadCertificate {
        path: cert_path.to_path_buf(),
        source,
    })?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::NotPem {
            path: cert_path.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert_path.to_path_buf()));
    }
    let key_pem = std::fs::read(key_path).map_err(|source| TlsError::ReadKey {
        path: key_path.to_path_buf(),
        source,
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| TlsError::NoKey {
        path: key_path.to_path_buf(),
        source,
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::UnsupportedKey {
            path: key_path.to_path_buf(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|source| TlsError::Mismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
            source,
        })?;
    let names = certificate_names(&certified.cert[0]).map_err(|reason| TlsError::Unreadable {
        path: cert_path.to_path_buf(),
        reason,
    })?;
    Ok(LoadedCertificate {
        cert_path: cert_path.to_path_buf(),
        names,
        key: Arc::new(certified),
    })
}

/// The leaf's subject alternative names (DNS names lower-cased, IPs as text), or its CN; the
/// parser's complaint when it cannot read the certificate.
fn certificate_names(leaf: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push(dns.to_ascii_lowercase()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes)
                            .ok()
                            .map(|b| std::net::IpAddr::from(b).to_string()),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .ok()
                            .map(|b| std::net::IpAddr::from(b).to_string()),
                        _ => None,
                    };
                    names.extend(ip);
                }
                _ => {}
            }
        }
    }
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    Ok(names)
}

/// Certificates of one listener, indexed for SNI.
#[derive(Debug, Default)]
pub struct CertificateSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `(".example.com", key)`, longest suffix first.
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertificateSet {
    /// Indexes `certificates`; the first one is the default for clients without a match.
    pub fn new(certificates: &[Arc<LoadedCertificate>]) -> Self {
        let mut set = CertificateSet {
            default: certificates.first().map(|c| Arc::clone(&c.key)),
            ..CertificateSet::default()
        };
        for certificate in certificates {
            for name in &certificate.names {
                match name.strip_prefix('*') {
                    Some(suffix) => set
                        .wildcard
                        .push((suffix.to_string(), Arc::clone(&certificate.key))),
                    None => {
                        set.exact
                            .entry(name.clone())
                            .or_insert_with(|| Arc::clone(&certificate.key));
                    }
                }
            }
        }
        set.wildcard
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        set
    }

    /// The certificate for a server name (`None`: no SNI sent).
    pub fn choose(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = server_name.map(|n| n.trim_end_matches('.').to_ascii_lowercase()) else {
            return self.default.clone();
        };
        if let Some(key) = self.exact.get(&name) {
            return Some(Arc::clone(key));
        }
        // A wildcard covers exactly one label: *.example.com matches a.example.com only.
        let wildcard = self.wildcard.iter().find(|(suffix, _)| {
            name.strip_suffix(suffix.as_str())
                .is_some_and(|label| !label.is_empty() && !label.contains('.'))
        });
        wildcard
            .map(|(_, key)| Arc::clone(key))
            .or_else(|| self.default.clone())
    }
}

/// rustls' certificate resolver over a swappable [`CertificateSet`].
#[derive(Debug)]
pub struct SniResolver {
    set: ArcSwap<CertificateSet>,
}

impl SniResolver {
    pub fn new(set: CertificateSet) -> Self {
        SniResolver {
            set: ArcSwap::from_pointee(set),
        }
    }

    /// Replaces the certificates (config reload); handshakes in progress keep the old ones.
    pub fn replace(&self, set: CertificateSet) {
        self.set.store(Arc::new(set));
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        TLS_METRICS.client_hellos.inc();
        self.set.load().choose(hello.server_name())
    }
}

/// What `parapet certs dev` replaces of what a directory already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Only what is missing: a missing leaf is made with the existing CA.
    Missing,
    /// The leaf, signed by the existing CA (`--force`).
    Leaf,
    /// The CA and the leaf (`--force-ca`): clients that trusted the old CA stop trusting.
    CaAndLeaf,
}

/// Makes what is missing of `ca.crt`/`ca.key` (a local CA) and `localhost.crt`/`localhost.key`
/// (a leaf for localhost, 127.0.0.1 and ::1 signed by it) in `dir`, keys with mode 0600. An
/// existing CA (both files) is kept and signs a missing leaf.
pub fn make_dev_certificates(dir: &Path) -> Result<Vec<PathBuf>, TlsError> {
    write_dev_certificates(dir, Replace::Missing)
}

/// Like [`make_dev_certificates`], replacing what `replace` says; the files written (none
/// when everything was there and nothing was to be replaced).
pub fn write_dev_certificates(dir: &Path, replace: Replace) -> Result<Vec<PathBuf>, TlsError> {
    let has = |name: &str| dir.join(name).exists();
    let keep_ca = has(DEV_CA_CERT) && has(DEV_CA_KEY) && replace != Replace::CaAndLeaf;
    let leaf_missing = !has(DEV_LEAF_CERT) || !has(DEV_LEAF_KEY);
    if keep_ca && !leaf_missing && replace == Replace::Missing {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(dir).map_err(|source| TlsError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let write = |name: &str, text: &str, mode: u32| write_file(&dir.join(name), text, mode);
    let mut written = Vec::new();
    let ca_key = if keep_ca {
        existing_ca_key(&dir.join(DEV_CA_KEY))?
    } else {
        rcgen::KeyPair::generate()?
    };
    // The same name and key as the CA on disk: what it signs verifies against that ca.crt.
    let ca_cert = dev_ca_params()?.self_signed(&ca_key)?;
    if !keep_ca {
        written.push(write(DEV_CA_CERT, &ca_cert.pem(), PUBLIC_MODE)?);
        written.push(write(
            DEV_CA_KEY,
            &ca_key.serialize_pem(),
            PRIVATE_KEY_MODE,
        )?);
    }
    let leaf_key = rcgen::KeyPair::generate()?;
    let leaf_cert = dev_leaf_params()?.signed_by(&leaf_key, &ca_cert, &ca_key)?;
    written.push(write(DEV_LEAF_CERT, &leaf_cert.pem(), PUBLIC_MODE)?);
    written.push(write(
        DEV_LEAF_KEY,
        &leaf_key.serialize_pem(),
        PRIVATE_KEY_MODE,
    )?);
    Ok(written)
}

fn existing_ca_key(path: &Path) -> Result<rcgen::KeyPair, TlsError> {
    let pem = std::fs::read_to_string(path).map_err(|source| TlsError::ReadKey {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(rcgen::KeyPair::from_pem(&pem)?)
}

fn dev_ca_params() -> Result<rcgen::CertificateParams, rcgen::Error> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "Parapet development CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn dev_leaf_params() -> Result<rcgen::CertificateParams, rcgen::Error> {
    use rcgen::{CertificateParams, DnType, KeyUsagePurpose, SanType};
    let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    Ok(params)
}

const DEV_CA_CERT: &str = "ca.crt";
const DEV_CA_KEY: &str = "ca.key";
const DEV_LEAF_CERT: &str = "localhost.crt";
const DEV_LEAF_KEY: &str = "localhost.key";
/// Private keys are readable by their owner only; certificates by anyone.
const PRIVATE_KEY_MODE: u32 = 0o600;
const PUBLIC_MODE: u32 = 0o644;

/// Writes `text` to `path` with `mode`, also when the file already existed with another.
fn write_file(path: &Path, text: &str, mode: u32) -> Result<PathBuf, TlsError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| {
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            file.write_all(text.as_bytes())
        });
    match written {
        Ok(()) => Ok(path.to_path_buf()),
        Err(source) => Err(TlsError::Write {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_certificates_load_and_cover_localhost() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().to_path_buf();
        make_dev_certificates(&dir).expect("generated");
        let leaf = load_certificate(&dir.join("localhost.crt"), &dir.join("localhost.key"))
            .expect("loads");
        assert!(leaf.names.contains(&"localhost".to_string()));
        assert!(leaf.names.contains(&"127.0.0.1".to_string()));
        assert!(leaf.names.contains(&"::1".to_string()));
        let mismatched =
            load_certificate(&dir.join("localhost.crt"), &dir.join("ca.key")).unwrap_err();
        assert!(
            mismatched.to_string().contains("do not belong together"),
            "{mismatched}"
        );
        let missing = load_certificate(&dir.join("nope.crt"), &dir.join("ca.key")).unwrap_err();
        assert!(missing.to_string().contains("nope.crt"), "{missing}");
    }

    #[test]
    fn dev_keys_are_private_and_an_existing_ca_is_kept_without_force_ca_issue_17() {
        use std::os::unix::fs::PermissionsExt;
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path();
        make_dev_certificates(dir).expect("generated");
        let mode = |name: &str| {
            let metadata = std::fs::metadata(dir.join(name)).expect("written");
            metadata.permissions().mode() & 0o777
        };
        assert_eq!((mode("ca.key"), mode("localhost.key")), (0o600, 0o600));
        assert_eq!((mode("ca.crt"), mode("localhost.crt")), (0o644, 0o644));
        let ca = std::fs::read(dir.join("ca.crt")).expect("ca");
        assert!(make_dev_certificates(dir).expect("kept").is_empty());
        assert_eq!(std::fs::read(dir.join("ca.crt")).expect("ca"), ca);
        std::fs::set_permissions(dir.join("ca.key"), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        write_dev_certificates(dir, Replace::CaAndLeaf).expect("forced");
        assert_ne!(std::fs::read(dir.join("ca.crt")).expect("ca"), ca);
        assert_eq!(mode("ca.key"), 0o600);
    }

    #[test]
    fn sni_prefers_exact_then_one_label_wildcards_then_the_default() {
        let key = |n: u8| {
            let temp = tempfile::tempdir().expect("tempdir");
            let dir = temp.path().join(n.to_string());
            make_dev_certificates(&dir).expect("generated");
            let loaded = load_certificate(&dir.join("localhost.crt"), &dir.join("localhost.key"))
                .expect("loads");
            loaded.key
        };
        let (first, exact, wild) = (key(1), key(2), key(3));
        let set = CertificateSet::new(&[
            Arc::new(LoadedCertificate {
                cert_path: "a".into(),
                names: vec!["default.test".into()],
                key: Arc::clone(&first),
            }),
            Arc::new(LoadedCertificate {
                cert_path: "b".into(),
                names: vec!["api.example.com".into()],
                key: Arc::clone(&exact),
            }),
            Arc::new(LoadedCertificate {
                cert_path: "c".into(),
                names: vec!["*.example.com".into()],
                key: Arc::clone(&wild),
            }),
        ]);
        assert!(Arc::ptr_eq(
            &set.choose(Some("API.example.com")).unwrap(),
            &exact
        ));
        assert!(Arc::ptr_eq(
            &set.choose(Some("www.example.com")).unwrap(),
            &wild
        ));
        assert!(Arc::ptr_eq(
            &set.choose(Some("a.b.example.com")).unwrap(),
            &first
        ));
        assert!(Arc::ptr_eq(&set.choose(None).unwrap(), &first));
    }
}
