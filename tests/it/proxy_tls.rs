//! TLS listeners: HTTP/2 negotiated by ALPN, certificates chosen by SNI and reloaded with the
//! config, certificate errors named at start-up, Alt-Svc when HTTP/3 is on, and upstream TLS.

use crate::harness::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A CA with leaves signed by it, written as PEM files into a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::CertifiedKey,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        parapet::tls::make_dev_certificates(dir.path()).expect("dev certificates");
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let cert = params.self_signed(&ca_key).expect("CA");
        std::fs::write(dir.path().join("test-ca.crt"), cert.pem()).expect("write CA");
        Pki {
            dir,
            ca: rcgen::CertifiedKey {
                cert,
                key_pair: ca_key,
            },
        }
    }

    /// The `parapet certs dev` CA (signs `localhost.crt`).
    fn dev_ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A leaf for `names` signed by the test CA; returns (cert path, key path).
    fn leaf(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).expect("params");
        let cert = params
            .signed_by(&key, &self.ca.cert, &self.ca.key_pair)
            .expect("leaf");
        let (cert_path, key_path) = (
            self.path(&format!("{file}.crt")),
            self.path(&format!("{file}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }
}

fn certificate_table(cert: &Path, key: &Path) -> String {
    format!(
        "\n[[listener.certificate]]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    )
}

/// One TLS listener with `protocols` and `certificates`, an upstream `app` with the backends.
fn tls_config(
    listen: SocketAddr,
    protocols: &str,
    certificates: &str,
    backends: &[SocketAddr],
) -> String {
    format!(
        "[server]\ngrace_period = \"1s\"\n\n[[listener]]\naddress = \"{listen}\"\nprotocols = {protocols}\n{certificates}\n[upstream.app]\n{}\n[[route]]\nupstream = \"app\"\n",
        servers("app", backends, "")
    )
}

fn tls_client(ca: &Path, resolve: &[(&str, SocketAddr)]) -> reqwest::ClientBuilder {
    let pem = std::fs::read(ca).expect("read CA");
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA pem"))
        .tls_info(true)
        .timeout(CLIENT_TIMEOUT);
    for (name, addr) in resolve {
        builder = builder.resolve(name, *addr);
    }
    builder
}

/// The DER of the leaf certificate the server presented.
fn served_certificate(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .map(<[u8]>::to_vec)
        .expect("TLS info with a peer certificate")
}

fn der_of(pem_file: &Path) -> Vec<u8> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    CertificateDer::from_pem_file(pem_file)
        .expect("PEM certificate")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_is_negotiated_by_alpn_and_http1_still_works() {
    let pki = Pki::new();
    let backend = Backend::start("tls-app").await;
    let listen = reserve_addr();
    let certs = certificate_table(&pki.path("localhost.crt"), &pki.path("localhost.key"));
    let proxy = Proxy::start(&tls_config(
        listen,
        r#"["http1", "h2"]"#,
        &certs,
        &[backend.addr()],
    ))
    .await;
    let url = format!("https://localhost:{}/alpn", proxy.addr().port());

    let h2 = tls_client(&pki.dev_ca(), &[("localhost", listen)])
        .build()
        .expect("client");
    let response = h2.get(&url).send().await.expect("h2 request");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "tls-app");
    assert_eq!(
        backend.last_received().header("x-forwarded-proto"),
        Some("https")
    );

    let h1 = tls_client(&pki.dev_ca(), &[("localhost", listen)])
        .http1_only()
        .build()
        .expect("client");
    let response = h1.get(&url).send().await.expect("h1 request");
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_without_h2_only_offers_http1() {
    let pki = Pki::new();
    let backend = Backend::start("h1-only").await;
    let listen = reserve_addr();
    let certs = certificate_table(&pki.path("localhost.crt"), &pki.path("localhost.key"));
    let proxy = Proxy::start(&tls_config(
        listen,
        r#"["http1"]"#,
        &certs,
        &[backend.addr()],
    ))
    .await;
    let client = tls_client(&pki.dev_ca(), &[("localhost", listen)])
        .build()
        .expect("client");
    let response = client
        .get(format!("https://localhost:{}/", proxy.addr().port()))
        .send()
        .await
        .expect("request");
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_exact_then_wildcard_then_the_first_certificate() {
    let pki = Pki::new();
    let backend = Backend::start("sni").await;
    let (default_cert, default_key) = pki.leaf("default", &["default.test"]);
    let (exact_cert, exact_key) = pki.leaf("exact", &["api.example.com"]);
    let (wild_cert, wild_key) = pki.leaf("wild", &["*.example.com"]);
    let certs = [
        certificate_table(&default_cert, &default_key),
        certificate_table(&exact_cert, &exact_key),
        certificate_table(&wild_cert, &wild_key),
    ]
    .concat();
    let listen = reserve_addr();
    let proxy = Proxy::start(&tls_config(
        listen,
        r#"["http1", "h2"]"#,
        &certs,
        &[backend.addr()],
    ))
    .await;
    let port = proxy.addr().port();
    let served = |name: &'static str| {
        let ca = pki.path("test-ca.crt");
        async move {
            // The default certificate does not cover the other names: accept it for that case.
            let client = tls_client(&ca, &[(name, listen)])
                .danger_accept_invalid_hostnames(true)
                .build()
                .expect("client");
            let response = client
                .get(format!("https://{name}:{port}/"))
                .send()
                .await
                .expect("request");
            served_certificate(&response)
        }
    };
    assert_eq!(served("api.example.com").await, der_of(&exact_cert));
    assert_eq!(served("www.example.com").await, der_of(&wild_cert));
    assert_eq!(served("other.test").await, der_of(&default_cert));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_reloaded_with_the_config() {
    let pki = Pki::new();
    let backend = Backend::start("reload").await;
    let (first_cert, first_key) = pki.leaf("first", &["localhost"]);
    let (second_cert, second_key) = pki.leaf("second", &["localhost"]);
    let listen = reserve_addr();
    let config = |cert: &Path, key: &Path| {
        tls_config(
            listen,
            r#"["http1", "h2"]"#,
            &certificate_table(cert, key),
            &[backend.addr()],
        )
    };
    let proxy = Proxy::start(&config(&first_cert, &first_key)).await;
    let url = format!("https://localhost:{}/", proxy.addr().port());
    let fetch_served = || async {
        // A fresh client each time, so each request makes a new TLS handshake.
        let client = tls_client(&pki.path("test-ca.crt"), &[("localhost", listen)])
            .build()
            .expect("client");
        served_certificate(&client.get(&url).send().await.expect("request"))
    };
    assert_eq!(fetch_served().await, der_of(&first_cert));

    proxy.write_config(&config(&second_cert, &second_key));
    proxy.send_signal(libc::SIGHUP);
    let mut now_serving = Vec::new();
    for _ in 0..250 {
        now_serving = fetch_served().await;
        if now_serving == der_of(&second_cert) {
            break;
        }
        tokio::time::sleep(POLL_STEP).await;
    }
    assert_eq!(now_serving, der_of(&second_cert), "{}", proxy.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_listeners_advertise_alt_svc_on_tcp_responses() {
    let pki = Pki::new();
    let backend = Backend::start("alt-svc").await;
    let listen = reserve_addr();
    let certs = certificate_table(&pki.path("localhost.crt"), &pki.path("localhost.key"));
    let proxy = Proxy::start(&tls_config(
        listen,
        r#"["http1", "h2", "h3"]"#,
        &certs,
        &[backend.addr()],
    ))
    .await;
    let client = tls_client(&pki.dev_ca(), &[("localhost", listen)])
        .build()
        .expect("client");
    let response = client
        .get(format!("https://localhost:{}/", proxy.addr().port()))
        .send()
        .await
        .expect("request");
    let expected = format!("h3=\":{}\"; ma=86400", listen.port());
    assert_eq!(
        response
            .headers()
            .get("alt-svc")
            .and_then(|v| v.to_str().ok()),
        Some(expected.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_without_h3_send_no_alt_svc() {
    let backend = Backend::start("no-alt-svc").await;
    let proxy = Proxy::start(&single_upstream_config(
        reserve_addr(),
        "",
        &[backend.addr()],
        "",
    ))
    .await;
    let response = client().get(proxy.url("/")).send().await.expect("request");
    assert!(response.headers().get("alt-svc").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_over_tls_is_reached_with_sni_a_private_ca_and_h2() {
    let pki = Pki::new();
    let backend = Backend::start("behind-tls").await;
    // The TLS upstream is a second Parapet terminating TLS in front of the backend.
    let inner_listen = reserve_addr();
    let certs = certificate_table(&pki.path("localhost.crt"), &pki.path("localhost.key"));
    let _inner = Proxy::start(&tls_config(
        inner_listen,
        r#"["http1", "h2"]"#,
        &certs,
        &[backend.addr()],
    ))
    .await;

    let outer_listen = reserve_addr();
    let outer_config = format!(
        "{}\n[upstream.secure]\n[[upstream.secure.server]]\naddress = \"{inner_listen}\"\ntls = true\nsni = \"localhost\"\nca_file = \"{}\"\n\n[[route]]\nupstream = \"secure\"\n",
        server_and_listener(outer_listen),
        pki.dev_ca().display()
    );
    let outer = Proxy::start(&outer_config).await;
    let response = client()
        .get(outer.url("/through"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    // The outer hop's Via names the version it spoke upstream: 2, chosen by ALPN.
    let via = response
        .headers()
        .get("via")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(via.ends_with("2 parapet"), "via: {via}");
    assert_eq!(response.text().await.expect("body"), "behind-tls");
    assert_eq!(backend.last_received().target, "/through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_with_an_untrusted_certificate_gets_502() {
    let pki = Pki::new();
    let backend = Backend::start("untrusted").await;
    let inner_listen = reserve_addr();
    let certs = certificate_table(&pki.path("localhost.crt"), &pki.path("localhost.key"));
    let _inner = Proxy::start(&tls_config(
        inner_listen,
        r#"["http1"]"#,
        &certs,
        &[backend.addr()],
    ))
    .await;
    let outer_listen = reserve_addr();
    // Trust a different CA than the one that signed the upstream's certificate.
    let outer_config = format!(
        "{}\n[upstream.secure]\nretries = 0\n[[upstream.secure.server]]\naddress = \"{inner_listen}\"\ntls = true\nsni = \"localhost\"\nca_file = \"{}\"\n\n[[route]]\nupstream = \"secure\"\n",
        server_and_listener(outer_listen),
        pki.path("test-ca.crt").display()
    );
    let outer = Proxy::start(&outer_config).await;
    let response = client().get(outer.url("/")).send().await.expect("request");
    assert_eq!(response.status(), 502);
    assert_eq!(backend.requests(), 0);
}

#[test]
fn certificate_problems_name_the_file_and_the_fault() {
    let pki = Pki::new();
    let (other_cert, _) = pki.leaf("other", &["localhost"]);
    let listen = reserve_addr();
    let missing = pki.path("missing.crt");
    let cases = [
        (missing.clone(), pki.path("localhost.key"), "missing.crt"),
        (
            other_cert.clone(),
            pki.path("localhost.key"),
            "do not belong together",
        ),
    ];
    for (cert, key, expected) in cases {
        let text = tls_config(
            listen,
            r#"["http1", "h2"]"#,
            &certificate_table(&cert, &key),
            &[listen],
        );
        let file = ConfigFile::new(&text);
        let output = file.check();
        assert!(!output.status.success(), "{}", output.output);
        let line = line_of(&text, "cert = ", 1);
        assert!(
            output
                .output
                .contains(&file.location(line, "listener[0].certificate[0].cert")),
            "{}",
            output.output
        );
        assert!(output.output.contains(expected), "{}", output.output);
    }
}

#[test]
fn h3_without_certificates_is_rejected_naming_the_protocols_key() {
    let listen = reserve_addr();
    let text = tls_config(listen, r#"["http1", "h3"]"#, "", &[listen]);
    let file = ConfigFile::new(&text);
    let output = file.check();
    assert!(!output.status.success());
    assert!(output.output.contains("need TLS"), "{}", output.output);
    assert!(
        output
            .output
            .contains(&file.location(line_of(&text, "protocols", 1), "listener[0].protocols")),
        "{}",
        output.output
    );
}

#[test]
fn certs_dev_writes_a_ca_and_a_localhost_leaf() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = run_parapet(&[
        "certs".as_ref(),
        "dev".as_ref(),
        "--dir".as_ref(),
        dir.path().as_os_str(),
    ]);
    assert!(output.status.success(), "{}", output.output);
    for file in ["ca.crt", "ca.key", "localhost.crt", "localhost.key"] {
        assert!(dir.path().join(file).exists(), "{file} missing");
    }
    let leaf = parapet::tls::load_certificate(
        &dir.path().join("localhost.crt"),
        &dir.path().join("localhost.key"),
    )
    .expect("the leaf loads");
    assert!(leaf.names.iter().any(|n| n == "localhost"));
    assert!(leaf.names.iter().any(|n| n == "127.0.0.1"));
}

/// A leaf `parapet certs dev` remade with the CA already there is trusted by a client that
/// trusts that CA: the TLS handshake succeeds (issue 25 point 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_remade_with_the_existing_dev_ca_is_trusted_by_its_clients() {
    let dir = tempfile::tempdir().expect("tempdir");
    parapet::tls::make_dev_certificates(dir.path()).expect("first certificates");
    let ca = std::fs::read(dir.path().join("ca.crt")).expect("ca.crt");
    std::fs::remove_file(dir.path().join("localhost.crt")).expect("remove the leaf");
    let written = parapet::tls::make_dev_certificates(dir.path()).expect("leaf remade");
    assert_eq!(written.len(), 2, "only the leaf is written: {written:?}");
    assert_eq!(
        std::fs::read(dir.path().join("ca.crt")).expect("ca.crt"),
        ca
    );

    let backend = Backend::start("remade").await;
    let listen = reserve_addr();
    let certs = certificate_table(
        &dir.path().join("localhost.crt"),
        &dir.path().join("localhost.key"),
    );
    let proxy = Proxy::start(&tls_config(
        listen,
        r#"["http1"]"#,
        &certs,
        &[backend.addr()],
    ))
    .await;
    let client = tls_client(&dir.path().join("ca.crt"), &[("localhost", listen)])
        .build()
        .expect("client");
    let url = format!("https://localhost:{}/", proxy.addr().port());
    let response = client
        .get(&url)
        .send()
        .await
        .expect("TLS handshake with the kept CA");
    assert_eq!(response.status(), 200);
}
