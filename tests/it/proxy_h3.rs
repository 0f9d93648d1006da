//! HTTP/3: QUIC on a TLS listener's port (UDP) with `protocols = [..., "h3"]`, served by the same
//! proxy as the TCP doors. The client is quinn + h3 trusting a CA made in the test's temp dir.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use h3::error::{Code, StreamError};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::harness::{
    admin_table, dev_certs, eventually, reserve_addr, servers, within, Backend, Origin, Proxy,
    Script, POLL_STEP, READY_TIMEOUT,
};

// ---------------------------------------------------------------------------------------------
// Setup

/// A config with one TLS listener (http1, h2, h3) on `listen`, upstream `app` over `backends`
/// with `upstream_keys`, a catch-all route, and `tail` appended.
fn h3_config(
    listen: SocketAddr,
    certs: &Path,
    backends: &[SocketAddr],
    upstream_keys: &str,
    tail: &str,
) -> String {
    format!(
        r#"[server]
threads = 2
grace_period = "1s"
max_request_body_size = "256MiB"

[[listener]]
address = "{listen}"
protocols = ["http1", "h2", "h3"]
[[listener.certificate]]
cert = "{cert}"
key = "{key}"

[upstream.app]
connect_timeout = "500ms"
read_timeout = "5s"
{upstream_keys}
{servers}

[[route]]
path_prefix = "/"
upstream = "app"
{tail}
"#,
        cert = certs.join("localhost.crt").display(),
        key = certs.join("localhost.key").display(),
        servers = servers("app", backends, ""),
    )
}

/// A proxy with h3 on a fresh port in front of `backends`, and an h3 client connected to it.
struct H3Setup {
    proxy: Proxy,
    client: H3Client,
    _certs: tempfile::TempDir,
}

async fn start(backends: &[SocketAddr], upstream_keys: &str, tail: &str) -> H3Setup {
    let certs = dev_certs();
    let listen = reserve_addr();
    let proxy = Proxy::start(&h3_config(
        listen,
        certs.path(),
        backends,
        upstream_keys,
        tail,
    ))
    .await;
    let client = H3Client::connect_when_ready(listen, &certs.path().join("ca.crt")).await;
    H3Setup {
        proxy,
        client,
        _certs: certs,
    }
}

// ---------------------------------------------------------------------------------------------
// The h3 client

/// One h3 response, read whole.
#[derive(Debug)]
struct H3Response {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl H3Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// An HTTP/3 connection to the proxy (one QUIC connection; requests are streams on it).
struct H3Client {
    _endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    send: SendRequest,
    authority: String,
}

fn client_config(ca: &Path) -> quinn::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read ca.crt") {
        roots
            .add(cert.expect("ca.crt is PEM"))
            .expect("CA accepted");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC client TLS");
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(10)).expect("idle timeout"),
    ));
    config.transport_config(Arc::new(transport));
    config
}

impl H3Client {
    /// One connection attempt to `addr` (server name "localhost").
    async fn connect(addr: SocketAddr, ca: &Path) -> Result<H3Client, String> {
        // The client's UDP port comes from the harness registry too: an OS-chosen one could be
        // the number another test reserved for its proxy's QUIC listener.
        let any: std::net::IpAddr = if addr.is_ipv4() {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        let bind = SocketAddr::new(any, reserve_addr().port());
        let mut endpoint =
            quinn::Endpoint::client(bind).map_err(|e| format!("client endpoint: {e}"))?;
        endpoint.set_default_client_config(client_config(ca));
        let connection = endpoint
            .connect(addr, "localhost")
            .map_err(|e| format!("connect: {e}"))?
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(connection.clone()))
            .await
            .map_err(|e| format!("h3 setup: {e}"))?;
        tokio::spawn(async move {
            let _ = driver.wait_idle().await;
        });
        Ok(H3Client {
            _endpoint: endpoint,
            connection,
            send,
            authority: format!("localhost:{}", addr.port()),
        })
    }

    /// Connects, retrying until the proxy's UDP socket answers (at most 10 s).
    async fn connect_when_ready(addr: SocketAddr, ca: &Path) -> H3Client {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let attempt =
                tokio::time::timeout(Duration::from_secs(1), H3Client::connect(addr, ca)).await;
            match attempt {
                Ok(Ok(client)) => return client,
                Ok(Err(e)) if Instant::now() > deadline => panic!("no HTTP/3 on {addr}: {e}"),
                Err(_) if Instant::now() > deadline => {
                    panic!("no HTTP/3 on {addr} within {READY_TIMEOUT:?}")
                }
                _ => tokio::time::sleep(POLL_STEP).await,
            }
        }
    }

    fn request(&self, method: &str, path: &str) -> http::request::Builder {
        http::Request::builder()
            .method(method)
            .uri(format!("https://{}{path}", self.authority))
    }

    /// Sends `request` with `body` (if any) and reads the whole response.
    async fn send(
        &self,
        request: http::Request<()>,
        body: Option<Bytes>,
    ) -> Result<H3Response, StreamError> {
        let mut send = self.send.clone();
        let mut stream = send.send_request(request).await?;
        if let Some(body) = body {
            stream.send_data(body).await?;
        }
        stream.finish().await?;
        let response = stream.recv_response().await?;
        let body = read_h3_body(&mut stream).await?;
        Ok(H3Response {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body,
        })
    }

    /// GETs `path` and reads every response on the stream: the interim (1xx) ones, then the
    /// final one whole.
    async fn get_with_interims(&self, path: &str) -> (Vec<http::Response<()>>, H3Response) {
        let request = self.request("GET", path).body(()).expect("request");
        let exchange = async {
            let mut send = self.send.clone();
            let mut stream = send.send_request(request).await?;
            stream.finish().await?;
            let mut interims = Vec::new();
            let response = loop {
                let response = stream.recv_response().await?;
                if !response.status().is_informational() {
                    break response;
                }
                interims.push(response);
            };
            let body = read_h3_body(&mut stream).await?;
            Ok::<_, StreamError>((
                interims,
                H3Response {
                    status: response.status().as_u16(),
                    headers: response.headers().clone(),
                    body,
                },
            ))
        };
        within(&format!("h3 GET {path}"), exchange)
            .await
            .unwrap_or_else(|e| panic!("h3 GET {path}: {e}"))
    }

    async fn get(&self, path: &str) -> H3Response {
        let request = self.request("GET", path).body(()).expect("request");
        within(&format!("h3 GET {path}"), self.send(request, None))
            .await
            .unwrap_or_else(|e| panic!("h3 GET {path}: {e}"))
    }
}

/// Reads a response body to its end.
async fn read_h3_body(
    stream: &mut h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
) -> Result<Vec<u8>, StreamError> {
    let mut body = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await? {
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            body.extend_from_slice(piece);
            let n = piece.len();
            chunk.advance(n);
        }
    }
    Ok(body)
}

impl Drop for H3Client {
    fn drop(&mut self) {
        self.connection.close(0u32.into(), b"done");
    }
}

// ---------------------------------------------------------------------------------------------
// A streaming HTTP/1.1 backend

/// Length of the repeating test pattern (a prime, so pieces rarely line up with it).
const PATTERN_LEN: usize = 65_521;

fn pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut state: u32 = 0x9e37_79b9;
        (0..PATTERN_LEN)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect()
    })
}

/// `len` bytes of the pattern starting at stream offset `offset`.
fn pattern_bytes(offset: usize, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut at = offset;
    while out.len() < len {
        let start = at % PATTERN_LEN;
        let take = (PATTERN_LEN - start).min(len - out.len());
        out.extend_from_slice(&pattern()[start..start + take]);
        at += take;
    }
    out
}

/// Whether `data` is the pattern at stream offset `offset`.
fn is_pattern(offset: usize, data: &[u8]) -> bool {
    let mut at = offset;
    let mut rest = data;
    while !rest.is_empty() {
        let start = at % PATTERN_LEN;
        let take = (PATTERN_LEN - start).min(rest.len());
        if rest[..take] != pattern()[start..start + take] {
            return false;
        }
        rest = &rest[take..];
        at += take;
    }
    true
}

/// Reads a request body piece by piece, framed by content-length or chunked.
enum BodyFraming {
    Length(u64),
    Chunked { left_in_chunk: u64, done: bool },
}

impl BodyFraming {
    fn of(headers: &[(String, String)]) -> BodyFraming {
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            BodyFraming::Chunked {
                left_in_chunk: 0,
                done: false,
            }
        } else {
            BodyFraming::Length(
                find("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )
        }
    }

    /// The next piece; `None` at the end of the body.
    async fn next<R: AsyncBufRead + Unpin>(&mut self, r: &mut R) -> io::Result<Option<Vec<u8>>> {
        const PIECE: u64 = 64 * 1024;
        match self {
            BodyFraming::Length(0) => Ok(None),
            BodyFraming::Length(left) => {
                let mut piece = vec![0; (*left).min(PIECE) as usize];
                let n = r.read(&mut piece).await?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                piece.truncate(n);
                *left -= n as u64;
                Ok(Some(piece))
            }
            BodyFraming::Chunked { done: true, .. } => Ok(None),
            BodyFraming::Chunked {
                left_in_chunk,
                done,
            } => {
                if *left_in_chunk == 0 {
                    let mut line = String::new();
                    if r.read_line(&mut line).await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    let size = line.trim().split(';').next().unwrap_or("");
                    let size = u64::from_str_radix(size.trim(), 16)
                        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
                    if size == 0 {
                        // Trailers up to the empty line.
                        loop {
                            let mut trailer = String::new();
                            if r.read_line(&mut trailer).await? == 0 || trailer.trim().is_empty() {
                                break;
                            }
                        }
                        *done = true;
                        return Ok(None);
                    }
                    *left_in_chunk = size;
                }
                let mut piece = vec![0; (*left_in_chunk).min(PIECE) as usize];
                let n = r.read(&mut piece).await?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                piece.truncate(n);
                *left_in_chunk -= n as u64;
                if *left_in_chunk == 0 {
                    let mut crlf = String::new();
                    r.read_line(&mut crlf).await?;
                }
                Ok(Some(piece))
            }
        }
    }
}

/// An HTTP/1.1 backend that never holds a whole body: `POST /echo` streams the request body
/// back (chunked) as it arrives; `GET /download/N` sends N pattern bytes; anything else reads
/// the body and answers with its length and whether it was the pattern. Uploads cut short (the
/// connection closed mid-body) are counted.
struct StreamingBackend {
    addr: SocketAddr,
    cut_short: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl StreamingBackend {
    async fn start() -> StreamingBackend {
        // A port from the harness registry, so no other test's reserved port is taken.
        let listener = TcpListener::bind(reserve_addr())
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("local_addr");
        let cut_short = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&cut_short);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let mut stream = BufReader::new(stream);
                    while let Ok(Some(())) = serve_streaming(&mut stream, &counter).await {}
                });
            }
        });
        StreamingBackend {
            addr,
            cut_short,
            task,
        }
    }

    fn cut_short(&self) -> usize {
        self.cut_short.load(Ordering::SeqCst)
    }
}

impl Drop for StreamingBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one request; `Ok(None)` when the client closed the connection between requests.
async fn serve_streaming(
    stream: &mut BufReader<TcpStream>,
    cut_short: &AtomicUsize,
) -> io::Result<Option<()>> {
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if stream.read_line(&mut header).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    let mut body = BodyFraming::of(&headers);
    let note_cut = |e: io::Error| {
        cut_short.fetch_add(1, Ordering::SeqCst);
        e
    };
    if method == "POST" && target == "/echo" {
        stream
            .get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-backend: echo\r\n\r\n")
            .await?;
        while let Some(piece) = body.next(stream).await.map_err(note_cut)? {
            let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
            chunk.extend_from_slice(&piece);
            chunk.extend_from_slice(b"\r\n");
            stream.get_mut().write_all(&chunk).await?;
        }
        stream.get_mut().write_all(b"0\r\n\r\n").await?;
        return Ok(Some(()));
    }
    let (mut received, mut intact) = (0usize, true);
    while let Some(piece) = body.next(stream).await.map_err(note_cut)? {
        intact &= is_pattern(received, &piece);
        received += piece.len();
    }
    if let Some(size) = target.strip_prefix("/download/") {
        let size: usize = size.parse().unwrap_or(0);
        let head =
            format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\nx-backend: download\r\n\r\n");
        stream.get_mut().write_all(head.as_bytes()).await?;
        let mut sent = 0;
        while sent < size {
            let piece = pattern_bytes(sent, (size - sent).min(256 * 1024));
            stream.get_mut().write_all(&piece).await?;
            sent += piece.len();
        }
    } else {
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-received-len: {received}\r\nx-received-pattern: {intact}\r\n\r\n"
        );
        stream.get_mut().write_all(head.as_bytes()).await?;
    }
    Ok(Some(()))
}

// ---------------------------------------------------------------------------------------------
// Requests through the proxy

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_get_is_proxied_with_host_from_authority_and_via() {
    let backend = Backend::start("app").await;
    let setup = start(&[backend.addr()], "", "").await;
    let response = setup.client.get("/h3?x=1").await;
    assert_eq!((response.status, response.text().as_str()), (200, "app"));
    assert_eq!(response.header("x-backend"), Some("app"));
    let via = response.header("via").unwrap_or_default();
    assert!(via.contains("parapet"), "Via on the response: {via:?}");
    let received = backend.last_received();
    assert_eq!(
        (received.method.as_str(), received.target.as_str()),
        ("GET", "/h3?x=1")
    );
    assert_eq!(
        received.header("host"),
        Some(setup.client.authority.as_str()),
        "Host from :authority"
    );
    let via = received.list("via");
    assert!(
        via.iter().any(|v| v == "3 parapet"),
        "Via to the backend: {via:?}"
    );
    assert_eq!(received.header_values("x-forwarded-for"), ["127.0.0.1"]);
    for name in ["transfer-encoding", "content-length"] {
        assert_eq!(
            received.header(name),
            None,
            "a bodiless GET carries no {name}"
        );
    }
}

/// Issue 12, rule 5 over HTTP/3: interim responses come before the final one, whose fields stay
/// its own, and a cached route stores only the final response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_clients_get_the_interim_responses_before_the_final_one() {
    let origin = Origin::start().await;
    origin.script(
        "/early",
        Script::fixed("final")
            .cache_control("max-age=600")
            .interim(103, &[("Link", "</app.js>; rel=preload; as=script")]),
    );
    let setup = start(&[origin.addr()], "", "cache = true").await;
    let (interims, response) = setup.client.get_with_interims("/early").await;
    let statuses: Vec<u16> = interims.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, [103], "{interims:?}");
    assert!(interims[0].headers().get("link").is_some(), "{interims:?}");
    assert_eq!((response.status, response.text().as_str()), (200, "final"));
    assert_eq!(response.header("link"), None, "{response:?}");
    let (interims, hit) = setup.client.get_with_interims("/early").await;
    assert!(
        interims.is_empty(),
        "a hit replays no interim response: {interims:?}"
    );
    assert_eq!((hit.status, hit.text().as_str()), (200, "final"));
    assert_eq!(origin.requests("/early"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_post_bodies_reach_the_backend_with_and_without_content_length() {
    let backend = Backend::start("app").await;
    let setup = start(&[backend.addr()], "", "").await;
    let body: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    for with_length in [true, false] {
        let mut request = setup.client.request("POST", "/upload");
        if with_length {
            request = request.header("content-length", body.len());
        }
        let response = within(
            "h3 POST",
            setup.client.send(
                request.body(()).expect("request"),
                Some(Bytes::from(body.clone())),
            ),
        )
        .await
        .expect("h3 POST");
        assert_eq!(response.status, 200, "content-length sent: {with_length}");
        assert_eq!(response.header("x-request-body-len"), Some("50000"));
        let received = backend.last_received();
        assert_eq!(received.method, "POST");
        assert!(
            received.body == body,
            "the body changed on the way (content-length sent: {with_length})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_streams_a_32_mib_body_both_ways_at_once() {
    const STEP: usize = 1 << 20;
    const STEPS: usize = 32;
    let backend = StreamingBackend::start().await;
    let setup = start(&[backend.addr], "", "").await;
    let request = setup
        .client
        .request("POST", "/echo")
        .header("content-length", STEP * STEPS)
        .body(())
        .expect("request");
    let mut send = setup.client.send.clone();
    let stream = within("open the echo stream", send.send_request(request))
        .await
        .expect("send request");
    let (mut upload, mut download) = stream.split();
    let (progress_tx, mut progress) = watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let response = download
            .recv_response()
            .await
            .expect("echo response header");
        assert_eq!(response.status(), 200);
        let (mut received, mut intact) = (0usize, true);
        while let Some(mut chunk) = download.recv_data().await.expect("echo body") {
            while chunk.has_remaining() {
                let piece = chunk.chunk();
                intact &= is_pattern(received, piece);
                received += piece.len();
                let n = piece.len();
                chunk.advance(n);
            }
            let _ = progress_tx.send(received);
        }
        (received, intact)
    });
    // Lockstep: the next megabyte goes out only when all but the last one came back, which only
    // works if the proxy streams both bodies instead of holding either whole.
    for step in 0..STEPS {
        within(
            "upload a step",
            upload.send_data(Bytes::from(pattern_bytes(step * STEP, STEP))),
        )
        .await
        .expect("send body");
        let target = step * STEP;
        within(
            "echo of the previous step",
            progress.wait_for(|&n| n >= target),
        )
        .await
        .expect("echo progress");
    }
    within("finish the upload", upload.finish())
        .await
        .expect("finish");
    let (received, intact) = within("the whole echo", reader).await.expect("reader");
    assert_eq!(received, STEP * STEPS);
    assert!(intact, "the echoed body differs from what was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_downloads_a_large_body() {
    const SIZE: usize = 24 << 20;
    let backend = StreamingBackend::start().await;
    let setup = start(&[backend.addr], "", "").await;
    let response = setup.client.get(&format!("/download/{SIZE}")).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-length"),
        Some(SIZE.to_string().as_str())
    );
    assert_eq!(response.body.len(), SIZE);
    assert!(is_pattern(0, &response.body), "the downloaded body differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_client_reset_stops_the_upstream_request() {
    let backend = StreamingBackend::start().await;
    let setup = start(&[backend.addr], "", "").await;
    let request = setup
        .client
        .request("POST", "/count")
        .header("content-length", 64 << 20)
        .body(())
        .expect("request");
    let mut send = setup.client.send.clone();
    let mut stream = within("open the upload", send.send_request(request))
        .await
        .expect("send request");
    for step in 0..2 {
        within(
            "upload",
            stream.send_data(Bytes::from(pattern_bytes(step << 20, 1 << 20))),
        )
        .await
        .expect("send body");
    }
    stream.stop_stream(Code::H3_REQUEST_CANCELLED);
    stream.stop_sending(Code::H3_REQUEST_CANCELLED);
    assert!(
        eventually(|| backend.cut_short() == 1).await,
        "the upstream upload was not cut short after the client reset ({} cut short)",
        backend.cut_short()
    );
    // The connection survives a reset stream.
    let response = setup.client.get("/count").await;
    assert_eq!(response.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_serves_20_concurrent_streams_on_one_connection() {
    let backend = Backend::start("app").await;
    let setup = start(&[backend.addr()], "", "").await;
    let client = Arc::new(setup.client);
    let requests: Vec<_> = (0..20)
        .map(|i| {
            let client = Arc::clone(&client);
            tokio::spawn(async move { client.get(&format!("/mux/{i}")).await })
        })
        .collect();
    for request in requests {
        let response = request.await.expect("task");
        assert_eq!((response.status, response.text().as_str()), (200, "app"));
    }
    assert_eq!(backend.requests(), 20);
    let mut targets: Vec<_> = backend.received().into_iter().map(|r| r.target).collect();
    targets.sort();
    let mut expected: Vec<_> = (0..20).map(|i| format!("/mux/{i}")).collect();
    expected.sort();
    assert_eq!(targets, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_spreads_h3_requests_over_three_backends() {
    let delay = Duration::from_millis(5);
    let a = Backend::builder("a").delay(delay).start().await;
    let b = Backend::builder("b").delay(delay).start().await;
    let c = Backend::builder("c").delay(delay).start().await;
    let setup = start(
        &[a.addr(), b.addr(), c.addr()],
        "balance = \"least_conn\"",
        "",
    )
    .await;
    let client = Arc::new(setup.client);
    let next = Arc::new(AtomicUsize::new(0));
    let total = 60;
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let (client, next) = (Arc::clone(&client), Arc::clone(&next));
            tokio::spawn(async move {
                let mut bodies = Vec::new();
                while next.fetch_add(1, Ordering::SeqCst) < total {
                    let response = client.get("/lc").await;
                    assert_eq!(response.status, 200);
                    bodies.push(response.text());
                }
                bodies
            })
        })
        .collect();
    let mut answered = Vec::new();
    for worker in workers {
        answered.extend(worker.await.expect("worker"));
    }
    assert_eq!(answered.len(), total);
    let counts = [a.requests(), b.requests(), c.requests()];
    assert_eq!(counts.iter().sum::<usize>(), total);
    assert!(
        counts.iter().all(|&n| n > 0),
        "requests per backend (a, b, c): {counts:?}"
    );
    for (name, count) in [("a", counts[0]), ("b", counts[1]), ("c", counts[2])] {
        assert_eq!(
            answered.iter().filter(|body| *body == name).count(),
            count,
            "answers from {name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_requests_are_counted_as_protocol_h3() {
    let backend = Backend::start("app").await;
    let admin = reserve_addr();
    let setup = start(&[backend.addr()], "", &admin_table(admin, None)).await;
    for _ in 0..3 {
        assert_eq!(setup.client.get("/metrics-h3").await.status, 200);
    }
    let (metrics, counted) = setup
        .proxy
        .metrics_until(|m| {
            m.matching(
                "parapet_requests_total",
                &[("protocol", "h3"), ("status_class", "2xx")],
            )
            .map(|s| s.value)
            .sum::<f64>()
                >= 3.0
        })
        .await;
    assert!(counted, "3 h3 requests not counted:\n{}", metrics.text);
    assert!(
        metrics.value(
            "parapet_downstream_connections_total",
            &[("protocol", "h3")]
        ) >= 1.0,
        "the QUIC connection is not counted:\n{}",
        metrics.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_h3_request_gets_a_stream_error_and_the_connection_lives_on() {
    let backend = Backend::start("app").await;
    let setup = start(&[backend.addr()], "", "").await;
    // Connection-specific fields make an HTTP/3 request malformed (RFC 9114 §4.2).
    let request = setup
        .client
        .request("GET", "/bad")
        .header("connection", "keep-alive")
        .body(())
        .expect("request");
    let outcome = within("malformed request", setup.client.send(request, None)).await;
    match outcome {
        Err(StreamError::RemoteTerminate { code, .. }) => assert_eq!(code, Code::H3_MESSAGE_ERROR),
        other => panic!("expected a stream reset with H3_MESSAGE_ERROR, got {other:?}"),
    }
    assert_eq!(
        backend.requests(),
        0,
        "a malformed request must not be forwarded"
    );
    assert_eq!(setup.client.get("/good").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_on_a_wildcard_bind_answers_from_the_address_the_client_used() {
    let backend = Backend::start("app").await;
    let certs = dev_certs();
    let port = reserve_addr().port();
    let wildcard: SocketAddr = format!("0.0.0.0:{port}").parse().expect("address");
    let _proxy = Proxy::start(&h3_config(
        wildcard,
        certs.path(),
        &[backend.addr()],
        "",
        "",
    ))
    .await;
    // 127.0.0.2 is not the address the kernel would pick to answer from on its own (127.0.0.1);
    // the client drops datagrams from any other address than the one it sent to.
    let other: SocketAddr = format!("127.0.0.2:{port}").parse().expect("address");
    let client = H3Client::connect_when_ready(other, &certs.path().join("ca.crt")).await;
    let response = client.get("/wild").await;
    assert_eq!((response.status, response.text().as_str()), (200, "app"));
}

// ---------------------------------------------------------------------------------------------
// Stop and upgrade

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_h3_request_finish() {
    let backend = Backend::builder("slow")
        .delay(Duration::from_millis(400))
        .start()
        .await;
    let mut setup = start(&[backend.addr()], "", "").await;
    let client = Arc::new(setup.client);
    let in_flight = {
        let client = Arc::clone(&client);
        tokio::spawn(async move { client.get("/slow").await })
    };
    assert!(
        eventually(|| backend.requests() == 1).await,
        "the request did not reach the backend"
    );
    setup.proxy.send_signal(libc::SIGTERM);
    let response = within("the in-flight request", in_flight)
        .await
        .expect("task");
    assert_eq!((response.status, response.text().as_str()), (200, "slow"));
    let status = setup.proxy.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit after SIGTERM: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_idle_h3_connections_cleanly() {
    let backend = Backend::start("app").await;
    let mut setup = start(&[backend.addr()], "", "").await;
    assert_eq!(setup.client.get("/before").await.status, 200);
    setup.proxy.send_signal(libc::SIGTERM);
    // GOAWAY, then CONNECTION_CLOSE with H3_NO_ERROR: not a silent exit the client only notices
    // when its idle timeout fires.
    let reason = within("the connection close", setup.client.connection.closed()).await;
    match &reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                close.error_code,
                quinn::VarInt::from(Code::H3_NO_ERROR.value() as u32),
                "{reason}"
            )
        }
        other => panic!("expected an application close with H3_NO_ERROR, got {other}"),
    }
    let status = setup.proxy.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit after SIGTERM: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_upgrade_hands_the_udp_socket_to_the_new_process() {
    let backend = Backend::start("app").await;
    let certs = dev_certs();
    let listen = reserve_addr();
    let socket: PathBuf = certs.path().join("upgrade.sock");
    let config = h3_config(listen, certs.path(), &[backend.addr()], "", "").replacen(
        "[server]\n",
        &format!("[server]\nupgrade_socket = \"{}\"\n", socket.display()),
        1,
    );
    let mut old = Proxy::start(&config).await;
    let ca = certs.path().join("ca.crt");
    assert_eq!(
        H3Client::connect_when_ready(listen, &ca)
            .await
            .get("/old")
            .await
            .status,
        200
    );

    let new = Proxy::spawn_upgrade(&config);
    // The new process waits on the upgrade socket; the old one sends its sockets on SIGQUIT.
    let deadline = Instant::now() + READY_TIMEOUT;
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "the new process never opened {}:\n{}",
            socket.display(),
            new.logs()
        );
        tokio::time::sleep(POLL_STEP).await;
    }
    old.send_signal(libc::SIGQUIT);
    assert!(
        eventually(|| new.logs().contains("took the UDP socket over")).await,
        "the new process did not inherit the UDP socket:\n{}",
        new.logs()
    );
    // Pingora keeps the old process serving for a few seconds after the hand-over.
    let exited = old.wait_exit(Duration::from_secs(15)).await;
    assert!(
        exited.is_some(),
        "the old process did not exit after SIGQUIT"
    );
    let client = within("h3 to the new process", H3Client::connect(listen, &ca))
        .await
        .unwrap_or_else(|e| panic!("no HTTP/3 after the upgrade: {e}\n{}", new.logs()));
    let response = client.get("/new").await;
    assert_eq!((response.status, response.text().as_str()), (200, "app"));
    assert!(
        !new.logs().contains("cannot bind UDP"),
        "the new process bound its own socket:\n{}",
        new.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_requests_are_checked_like_the_other_doors_issue_17() {
    let backend = Backend::start("app").await;
    let setup = start(&[backend.addr()], "", "").await;
    // A value with surrounding whitespace is malformed (RFC 9114 §4.2 via RFC 9110 §5.5).
    for value in [" leading", "trailing\t"] {
        let request = setup
            .client
            .request("GET", "/padded")
            .header("x-value", value)
            .body(())
            .expect("request");
        match within("padded value", setup.client.send(request, None)).await {
            Err(StreamError::RemoteTerminate { code, .. }) => {
                assert_eq!(code, Code::H3_MESSAGE_ERROR, "{value:?}")
            }
            other => panic!("{value:?}: expected H3_MESSAGE_ERROR, got {other:?}"),
        }
    }
    let long = format!("/{}", "a".repeat(8 * 1024));
    assert_eq!(setup.client.get(&long).await.status, 414);
    assert_eq!(
        backend.requests(),
        0,
        "a refused request reached the backend"
    );
    assert_eq!(setup.client.get("/fine").await.status, 200);
    let received = backend.last_received();
    assert_eq!(received.target, "/fine");
    assert_eq!(
        received.header_values("host"),
        [format!("localhost:{}", setup.proxy.addr().port())]
    );
}
