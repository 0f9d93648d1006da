//! An in-process QUIC test harness: a real quinn server and h3 client on loopback, joined into
//! an [`H3Session`] for one request and the client's side of its stream.

use super::request::request_header;
use super::session::{ConnectionInfo, H3Session};
use crate::config::Http3Limits;
use crate::tls::{CertificateSet, SniResolver};
use bytes::{Buf, Bytes};
use h3::error::{Code, StreamError};
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::Digest;
use std::sync::Arc;
use std::time::Duration;

pub(super) type ClientStream = h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// A server-side session for the request `request` sends from a real client, and the
/// client's stream.
pub(super) struct Pair {
    pub session: H3Session,
    pub client: ClientStream,
    pub _keep: Vec<Box<dyn std::any::Any + Send>>,
}

pub(super) async fn pair(
    request: http::Request<()>,
    body: Option<&'static [u8]>,
    finish: bool,
) -> Pair {
    let dir = tempfile::tempdir().expect("tempdir");
    crate::tls::make_dev_certificates(dir.path()).expect("certificates");
    let loaded = crate::tls::load_certificate(
        &dir.path().join("localhost.crt"),
        &dir.path().join("localhost.key"),
    )
    .expect("certificate loads");
    let resolver = Arc::new(SniResolver::new(CertificateSet::new(&[Arc::new(loaded)])));
    let limits = Http3Limits {
        max_concurrent_streams: 10,
        max_field_section_size: 16 * 1024,
        stream_receive_window: 1 << 20,
        receive_window: 4 << 20,
        idle_timeout: Duration::from_secs(10),
    };
    let server_config = super::server_config(&resolver, &limits).expect("server config");
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().expect("addr"))
        .expect("server");
    let address = server.local_addr().expect("local addr");

    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        rustls::pki_types::CertificateDer::pem_file_iter(dir.path().join("ca.crt")).expect("ca")
    {
        roots.add(cert.expect("pem")).expect("root");
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("tls13")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client");
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls"),
    )));

    let client_side = async {
        let connection = client
            .connect(address, "localhost")
            .expect("connect")
            .await
            .expect("handshake");
        let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(connection))
            .await
            .expect("h3");
        let drive = tokio::spawn(async move {
            let _ = driver.wait_idle().await;
        });
        let mut stream = send.send_request(request).await.expect("request");
        if let Some(body) = body {
            stream
                .send_data(Bytes::from_static(body))
                .await
                .expect("body");
        }
        if finish {
            stream.finish().await.expect("finish");
        }
        (stream, send, drive)
    };
    let server_side = async {
        let incoming = server.accept().await.expect("incoming");
        let connection = incoming.await.expect("server handshake");
        let mut h3 = h3::server::builder()
            .build::<_, Bytes>(h3_quinn::Connection::new(connection.clone()))
            .await
            .expect("h3 server");
        let resolver = h3.accept().await.expect("accept").expect("a request");
        let (request, stream) = resolver.resolve_request().await.expect("request header");
        // The connection must go on being polled (control stream) and must not be dropped.
        let poll = tokio::spawn(async move { while let Ok(Some(_)) = h3.accept().await {} });
        (request, stream, connection, poll)
    };
    let ((client_stream, send, drive), (request, stream, connection, poll)) =
        tokio::join!(client_side, server_side);
    let (send_half, recv_half) = stream.split();
    let info = Arc::new(ConnectionInfo {
        client: SocketAddr::Inet(connection.remote_address()),
        server: SocketAddr::Inet(address),
        connection,
        digest: Digest::default(),
    });
    let header = request_header(request).expect("valid request");
    Pair {
        session: H3Session::new(header, send_half, recv_half, info),
        client: client_stream,
        _keep: vec![
            Box::new(server),
            Box::new(client),
            Box::new(send),
            Box::new(drive),
            Box::new(poll),
            Box::new(dir),
        ],
    }
}

pub(super) fn get(path: &str) -> http::Request<()> {
    http::Request::get(format!("https://localhost{path}"))
        .body(())
        .expect("request")
}

pub(super) async fn body_of(
    client: &mut ClientStream,
) -> std::result::Result<Vec<u8>, StreamError> {
    let mut body = Vec::new();
    while let Some(mut chunk) = client.recv_data().await? {
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    Ok(body)
}

pub(super) fn reset_code(e: &StreamError) -> Option<Code> {
    match e {
        StreamError::RemoteTerminate { code, .. } => Some(*code),
        _ => None,
    }
}
