//! Clients: reqwest for HTTP/1.1 and h2c, a load generator, and a raw HTTP/1.1 connection for
//! requests a well-behaved library would not send.

use super::wire::{find_header, header_values, read_framed_body, read_header_lines, Header};
use super::CLIENT_TIMEOUT;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// An HTTP/1.1 client: no proxy from the environment, a 5 s timeout per request.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .expect("reqwest client")
}

/// A prior-knowledge HTTP/2 (h2c) client.
pub fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .expect("reqwest h2c client")
}

/// GET `url`: status and body, or the error as text.
pub async fn try_get(client: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let response = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| format!("{e:?}"))?;
    Ok((status, body))
}

/// GET `url`: status and body; panics on a transport error.
pub async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    try_get(client, url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// Sends `total` GETs of `url` from `concurrency` concurrent workers; one result per request.
pub async fn load(
    client: &reqwest::Client,
    url: &str,
    total: usize,
    concurrency: usize,
) -> Vec<Result<(u16, String), String>> {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, next) = (client.clone(), url.to_string(), next.clone());
            tokio::spawn(async move {
                let mut results = Vec::new();
                while next.fetch_add(1, Ordering::SeqCst) < total {
                    results.push(try_get(&client, &url).await);
                }
                results
            })
        })
        .collect();
    let mut results = Vec::with_capacity(total);
    for worker in workers {
        results.extend(worker.await.expect("load worker"));
    }
    results
}

/// The outcome of one GET: status and body, or the transport error as text.
pub type GetResult = Result<(u16, String), String>;

/// GETs of one URL sent back to back by concurrent workers until [`BackgroundLoad::stop`].
pub struct BackgroundLoad {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Vec<GetResult>>>,
}

impl BackgroundLoad {
    pub fn start(client: &reqwest::Client, url: &str, workers: usize) -> BackgroundLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|_| {
                let (client, url, stop) = (client.clone(), url.to_string(), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut results = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        results.push(try_get(&client, &url).await);
                    }
                    results
                })
            })
            .collect();
        BackgroundLoad { stop, workers }
    }

    /// Stops the workers; one result per request sent.
    pub async fn stop(self) -> Vec<GetResult> {
        self.stop.store(true, Ordering::Relaxed);
        let mut results = Vec::new();
        for worker in self.workers {
            results.extend(worker.await.expect("load worker"));
        }
        results
    }
}

/// The results that are not `Ok((200, _))`, for assertion messages.
pub fn failures(results: &[Result<(u16, String), String>]) -> Vec<String> {
    results
        .iter()
        .filter(|r| !matches!(r, Ok((200, _))))
        .map(|r| format!("{r:?}"))
        .collect()
}

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn header_values(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads the status line and headers of one response, interim or final.
async fn read_head<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<(u16, Vec<Header>)> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
    let headers = read_header_lines(r).await?;
    Ok((status, headers))
}

/// An interim (1xx) response: status and header lines.
pub type Interim = (u16, Vec<Header>);

/// Reads the status line and headers of the final response, and the interim ones before it.
async fn read_heads<R: AsyncBufRead + Unpin>(
    r: &mut R,
) -> io::Result<(Vec<Interim>, u16, Vec<Header>)> {
    let mut interims = Vec::new();
    loop {
        let (status, headers) = read_head(r).await?;
        if !(100..200).contains(&status) || status == 101 {
            return Ok((interims, status, headers));
        }
        interims.push((status, headers));
    }
}

/// Reads the status line and headers of the final response (1xx skipped).
async fn read_final_head<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<(u16, Vec<Header>)> {
    let (_, status, headers) = read_heads(r).await?;
    Ok((status, headers))
}

/// Reads one final response (1xx skipped) from a raw HTTP/1.1 connection.
pub async fn read_response<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<RawResponse> {
    read_response_and_interims(r)
        .await
        .map(|(_, response)| response)
}

/// Reads one final response and the interim (1xx) responses that came before it.
pub async fn read_response_and_interims<R: AsyncBufRead + Unpin>(
    r: &mut R,
) -> io::Result<(Vec<Interim>, RawResponse)> {
    let (interims, status, headers) = read_heads(r).await?;
    let body = if status == 204 || status == 304 {
        Vec::new()
    } else if let Some(body) = read_framed_body(r, &headers).await? {
        body
    } else {
        let mut body = Vec::new();
        r.read_to_end(&mut body).await?;
        body
    };
    Ok((
        interims,
        RawResponse {
            status,
            headers,
            body,
        },
    ))
}

/// Bounds a client-side await by [`CLIENT_TIMEOUT`], so a hang fails the test.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(CLIENT_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {CLIENT_TIMEOUT:?}"))
}

/// A raw HTTP/1.1 connection, for requests a well-behaved client library would not send.
pub struct RawConnection {
    stream: BufReader<TcpStream>,
}

impl RawConnection {
    pub async fn open(addr: SocketAddr) -> RawConnection {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        let _ = stream.set_nodelay(true);
        RawConnection {
            stream: BufReader::new(stream),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .get_mut()
            .write_all(bytes)
            .await
            .expect("write request");
    }

    pub async fn response(&mut self) -> RawResponse {
        within("response", read_response(&mut self.stream))
            .await
            .expect("read response")
    }

    /// The interim (1xx) responses and the final response, in the order they came.
    pub async fn response_and_interims(&mut self) -> (Vec<Interim>, RawResponse) {
        within("response", read_response_and_interims(&mut self.stream))
            .await
            .expect("read response")
    }

    /// True when the peer has closed the connection: a read gives EOF (or a reset).
    pub async fn is_closed_by_peer(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match within("read after response", self.stream.read(&mut byte)).await {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        }
    }
}

/// Sends one `GET path` with the given header lines (include `Host`) on a fresh connection and
/// reads the response.
pub async fn raw_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut connection = RawConnection::open(addr).await;
    connection.send(request.as_bytes()).await;
    connection.response().await
}

/// `GET path` with `Host: host` on a fresh connection.
pub async fn get_with_host(addr: SocketAddr, host: &str, path: &str) -> RawResponse {
    raw_get(addr, path, &[("Host", host)]).await
}

/// Reads one final response to a HEAD request: status line and headers, no body.
pub async fn read_head_response<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<RawResponse> {
    let (status, headers) = read_final_head(r).await?;
    Ok(RawResponse {
        status,
        headers,
        body: Vec::new(),
    })
}

impl RawConnection {
    /// Reads one response head, interim (1xx) or final: status and headers, no body.
    pub async fn next_head(&mut self) -> RawResponse {
        let (status, headers) = within("response head", read_head(&mut self.stream))
            .await
            .expect("read response head");
        RawResponse {
            status,
            headers,
            body: Vec::new(),
        }
    }

    /// Every byte the peer sends until it closes the connection (at most 5 s).
    pub async fn read_until_closed(&mut self) -> Vec<u8> {
        let mut bytes = Vec::new();
        let read = within("read until closed", self.stream.read_to_end(&mut bytes)).await;
        if let Err(e) = read {
            assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "read: {e}");
        }
        bytes
    }

    /// Reads the response to a HEAD request (no body follows the headers).
    pub async fn head_response(&mut self) -> RawResponse {
        within("HEAD response", read_head_response(&mut self.stream))
            .await
            .expect("read HEAD response")
    }
}
