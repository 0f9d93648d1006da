//! The scripted origin: a keep-alive HTTP/1.1 server that answers each path as scripted
//! (status, headers, fixed, counted, chunked, streamed or close-delimited bodies, conditional
//! 304s, delays), counting and recording what it receives.

use super::eventually;
use super::ports::{fresh_listener, rebind, ServerTasks};
use super::wire::{
    connection_tokens, find_header, http_date, parse_http_date, read_request, Header, Received,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Bytes of one generated chunk of a streamed body ([`Script::generated`]).
pub const GENERATED_CHUNK_BYTES: usize = 64 * 1024;
/// The pause between the two parts of [`Script::two_parts`].
const PAUSE_BETWEEN_PARTS: Duration = Duration::from_millis(200);
/// Size of the chunks of a [`Script::chunked`] body.
const CHUNK_BYTES: usize = 16 * 1024;

/// How the body of a scripted response is made.
#[derive(Clone, Debug)]
enum ScriptBody {
    Fixed(Vec<u8>),
    /// `PREFIX` followed by the number of requests the path has received, this one included.
    Counted(String),
    /// `n` chunks of [`generated_chunk`], sent chunked as they are made.
    Generated(usize),
    /// Sent chunked: the first part, a pause (so the proxy has sent the response header), the
    /// second part.
    TwoParts(Vec<u8>, Vec<u8>),
}

impl ScriptBody {
    /// The whole body, for one that is not streamed.
    fn bytes(&self, count: usize) -> Option<Vec<u8>> {
        match self {
            ScriptBody::Fixed(body) => Some(body.clone()),
            ScriptBody::Counted(prefix) => Some(format!("{prefix}{count}").into_bytes()),
            ScriptBody::Generated(_) | ScriptBody::TwoParts(..) => None,
        }
    }
}

/// Chunk `index` of a generated body: text lines with pseudo-random hex, so it compresses to
/// about half (a proxy that held the body would show it in its memory).
pub fn generated_chunk(index: usize) -> Vec<u8> {
    let mut state = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(GENERATED_CHUNK_BYTES);
    let mut line = 0;
    while out.len() < GENERATED_CHUNK_BYTES {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(
            format!("{index:06} {line:05} {state:016x}{:016x}\n", !state).as_bytes(),
        );
        line += 1;
    }
    out.truncate(GENERATED_CHUNK_BYTES);
    out
}

/// The answer an [`Origin`] gives on one path.
#[derive(Clone, Debug)]
pub struct Script {
    status: u16,
    headers: Vec<Header>,
    body: ScriptBody,
    delay: Duration,
    conditional: bool,
    chunked: bool,
    until_close: bool,
    /// Adds `Date: now` unless a `Date` header is scripted.
    date: bool,
    /// Adds `x-request-body-len: N`, the length of the request body received.
    echo_body_length: bool,
    /// Interim (1xx) responses sent before the final one: status and header lines.
    interim: Vec<(u16, Vec<Header>)>,
    /// Closes the connection without answering (a crashing handler).
    unanswered: bool,
}

impl Script {
    /// 200, `Content-Type: text/plain`, a fixed body, no cache headers. Every response
    /// carries `Date: now` unless a `Date` header is scripted.
    pub fn fixed(body: impl Into<Vec<u8>>) -> Script {
        Script {
            status: 200,
            headers: vec![("Content-Type".to_string(), "text/plain".to_string())],
            body: ScriptBody::Fixed(body.into()),
            delay: Duration::ZERO,
            conditional: false,
            chunked: false,
            until_close: false,
            date: true,
            echo_body_length: false,
            interim: Vec::new(),
            unanswered: false,
        }
    }

    /// Like [`Script::fixed`], the body being `PREFIX` and the path's request count
    /// (`v1`, `v2`, ...), so a stored body can be told from a fresh one.
    pub fn counted(prefix: &str) -> Script {
        Script {
            body: ScriptBody::Counted(prefix.to_string()),
            ..Script::fixed("")
        }
    }

    /// Like [`Script::fixed`], the body being `chunks` chunks of [`generated_chunk`], sent
    /// chunked as they are made (the origin never holds the whole body).
    pub fn generated(chunks: usize) -> Script {
        Script {
            body: ScriptBody::Generated(chunks),
            ..Script::fixed("")
        }
    }

    /// Like [`Script::fixed`], sent chunked: `first`, a pause (so the proxy has sent the
    /// response header), then `second`.
    pub fn two_parts(first: Vec<u8>, second: Vec<u8>) -> Script {
        Script {
            body: ScriptBody::TwoParts(first, second),
            ..Script::fixed("")
        }
    }

    /// Removes the `Content-Type` (an untyped response).
    pub fn without_content_type(mut self) -> Script {
        self.headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case("content-type"));
        self
    }

    pub fn status(mut self, status: u16) -> Script {
        self.status = status;
        self
    }

    /// Adds a response header line.
    pub fn header(mut self, name: &str, value: &str) -> Script {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Replaces the `Content-Type` (`text/plain` unless set).
    pub fn content_type(mut self, value: &str) -> Script {
        self.headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case("content-type"));
        self.header("Content-Type", value)
    }

    pub fn cache_control(self, value: &str) -> Script {
        self.header("Cache-Control", value)
    }

    /// Sleeps this long (after counting the request) before answering.
    pub fn delay(mut self, delay: Duration) -> Script {
        self.delay = delay;
        self
    }

    /// Answers 304 (with the scripted headers, no body) when `If-None-Match` matches the
    /// scripted `ETag` (weak comparison), or, without `If-None-Match`, when
    /// `If-Modified-Since` is not earlier than the scripted `Last-Modified`.
    pub fn conditional(mut self) -> Script {
        self.conditional = true;
        self
    }

    /// Sends the body with `Transfer-Encoding: chunked` instead of `Content-Length`.
    pub fn chunked(mut self) -> Script {
        self.chunked = true;
        self
    }

    /// Sends the body with neither `Content-Length` nor chunking, delimited by closing the
    /// connection (an unknown length).
    pub fn until_close(mut self) -> Script {
        self.until_close = true;
        self
    }

    /// Sends no `Date` header.
    pub fn without_date(mut self) -> Script {
        self.date = false;
        self
    }

    /// Adds `x-request-body-len: N`, the length of the request body received.
    pub fn echo_body_length(mut self) -> Script {
        self.echo_body_length = true;
        self
    }

    /// Sends an interim response (`status` 100-199, with `headers`) before the final one; several
    /// are sent in the order added.
    pub fn interim(mut self, status: u16, headers: &[(&str, &str)]) -> Script {
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        self.interim.push((status, headers));
        self
    }

    /// Reads the request, then closes the connection without a byte of answer (a handler that
    /// crashed, a worker recycled mid-request).
    pub fn unanswered(mut self) -> Script {
        self.unanswered = true;
        self
    }

    fn has_header(&self, name: &str) -> bool {
        find_header(&self.headers, name).is_some()
    }

    /// Whether `request` is a conditional request this script answers with 304.
    fn not_modified(&self, request: &Received) -> bool {
        if !self.conditional {
            return false;
        }
        if let Some(inm) = request.header("if-none-match") {
            let Some(etag) = find_header(&self.headers, "etag") else {
                return false;
            };
            let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
            return inm
                .split(',')
                .any(|t| t.trim() == "*" || opaque(t) == opaque(etag));
        }
        match (
            request
                .header("if-modified-since")
                .and_then(parse_http_date),
            find_header(&self.headers, "last-modified").and_then(parse_http_date),
        ) {
            (Some(since), Some(modified)) => modified <= since,
            _ => false,
        }
    }
}

/// How an [`Origin`] treats its keep-alive connections, beyond answering requests. Each close
/// is silent: no `Connection: close` announced it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectionHabits {
    /// Close a connection left idle this long after a response.
    pub idle_close: Option<Duration>,
    /// Close a connection right after its Nth response.
    pub close_after: Option<usize>,
    /// Close a reused connection, unanswered, when its second (or later) request arrives.
    pub drop_reused: bool,
}

struct OriginState {
    scripts: Mutex<HashMap<String, Script>>,
    /// The answer on paths without a script of their own (404 when unset).
    fallback: Mutex<Option<Script>>,
    counts: Mutex<HashMap<String, usize>>,
    received: Mutex<Vec<Received>>,
    accepts: AtomicUsize,
    habits: ConnectionHabits,
}

/// A real HTTP/1.1 keep-alive server on 127.0.0.1 that answers each path (the target without
/// its query) as scripted with [`Origin::script`] (else the [`Origin::fallback`] script, else
/// 404), counts connections and the requests per path (every method) and records them.
pub struct Origin {
    state: Arc<OriginState>,
    addr: SocketAddr,
    tasks: ServerTasks,
}

fn path_of(target: &str) -> &str {
    target.split('?').next().unwrap_or(target)
}

impl Origin {
    pub async fn start() -> Origin {
        Origin::start_with(ConnectionHabits::default()).await
    }

    /// An origin that closes its keep-alive connections as `habits` says, silently.
    pub async fn start_with(habits: ConnectionHabits) -> Origin {
        let (listener, addr) = fresh_listener();
        let state = Arc::new(OriginState {
            scripts: Mutex::new(HashMap::new()),
            fallback: Mutex::new(None),
            counts: Mutex::new(HashMap::new()),
            received: Mutex::new(Vec::new()),
            accepts: AtomicUsize::new(0),
            habits,
        });
        let origin = Origin {
            state,
            addr,
            tasks: ServerTasks::default(),
        };
        origin.accept(listener);
        origin
    }

    fn accept(&self, listener: TcpListener) {
        let state = Arc::clone(&self.state);
        self.tasks.accept(listener, move |stream| {
            state.accepts.fetch_add(1, Ordering::SeqCst);
            origin_connection(stream, Arc::clone(&state))
        });
    }

    /// Sets (or replaces) the answer on every path without a script of its own.
    pub fn fallback(&self, script: Script) {
        *self.state.fallback.lock().expect("fallback") = Some(script);
    }

    /// TCP connections accepted so far (over every start of this origin).
    pub fn accepts(&self) -> usize {
        self.state.accepts.load(Ordering::SeqCst)
    }

    /// Every request received so far, in arrival order.
    pub fn received_all(&self) -> Vec<Received> {
        self.state.received.lock().expect("received").clone()
    }

    /// Listens again on the same port after [`Origin::stop`].
    pub async fn restart(&self) {
        assert!(!self.tasks.is_accepting(), "restart of a running origin");
        self.accept(rebind(self.addr).await);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets (or replaces, at any time) the answer on `path`.
    pub fn script(&self, path: &str, script: Script) {
        self.state
            .scripts
            .lock()
            .expect("scripts")
            .insert(path.to_string(), script);
    }

    /// Requests received on `path` (query ignored) so far, every method.
    pub fn requests(&self, path: &str) -> usize {
        let counts = self.state.counts.lock().expect("counts");
        counts.get(path).copied().unwrap_or(0)
    }

    /// Requests received on every path so far.
    pub fn total_requests(&self) -> usize {
        self.state.counts.lock().expect("counts").values().sum()
    }

    /// The requests received on `path` (query ignored), in arrival order.
    pub fn received(&self, path: &str) -> Vec<Received> {
        let received = self.state.received.lock().expect("received");
        received
            .iter()
            .filter(|r| path_of(&r.target) == path)
            .cloned()
            .collect()
    }

    /// The last request received on `path`; panics when there was none.
    pub fn last_received(&self, path: &str) -> Received {
        self.received(path)
            .pop()
            .unwrap_or_else(|| panic!("the origin received no request on {path}"))
    }

    /// Waits (at most 10 s) until `path` has received at least `count` requests.
    pub async fn wait_requests(&self, path: &str, count: usize) -> bool {
        eventually(|| self.requests(path) >= count).await
    }

    /// Closes the listener and every open connection: connects are refused from now on.
    pub async fn stop(&self) {
        self.tasks.stop().await
    }
}

/// Header names a 304 leaves out: they describe the body it does not carry.
const BODY_HEADERS: [&str; 4] = [
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
];

async fn origin_connection(stream: TcpStream, state: Arc<OriginState>) {
    let _ = stream.set_nodelay(true);
    let mut stream = BufReader::new(stream);
    let habits = state.habits;
    let mut served = 0;
    while let Some(request) = read_request(&mut stream, habits.idle_close).await {
        served += 1;
        let mut close = connection_tokens(&request.headers)
            .iter()
            .any(|t| t == "close")
            || request.version == "HTTP/1.0";
        let path = path_of(&request.target).to_string();
        let count = {
            let mut counts = state.counts.lock().expect("counts");
            let count = counts.entry(path.clone()).or_insert(0);
            *count += 1;
            *count
        };
        state
            .received
            .lock()
            .expect("received")
            .push(request.clone());
        let script = state.scripts.lock().expect("scripts").get(&path).cloned();
        let script = script
            .or_else(|| state.fallback.lock().expect("fallback").clone())
            .unwrap_or_else(|| Script::fixed(format!("no script for {path}\n")).status(404));
        if script.unanswered || (habits.drop_reused && served > 1) {
            return;
        }
        if !script.delay.is_zero() {
            tokio::time::sleep(script.delay).await;
        }
        if write_interim(stream.get_mut(), &script.interim)
            .await
            .is_err()
        {
            return;
        }
        let not_modified = script.not_modified(&request);
        let status = if not_modified { 304 } else { script.status };
        let mut head = format!("HTTP/1.1 {status} Scripted\r\n");
        for (name, value) in &script.headers {
            if !(not_modified && BODY_HEADERS.contains(&name.to_ascii_lowercase().as_str())) {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        if script.date && !script.has_header("date") {
            head.push_str(&format!("Date: {}\r\n", http_date(SystemTime::now())));
        }
        if script.echo_body_length {
            head.push_str(&format!("x-request-body-len: {}\r\n", request.body.len()));
        }
        let body = script.body.bytes(count);
        let chunked = script.chunked || body.is_none();
        let bodiless = not_modified || matches!(status, 204 | 304) || (100..200).contains(&status);
        if !bodiless {
            if script.until_close {
                close = true;
            } else if chunked {
                head.push_str("Transfer-Encoding: chunked\r\n");
            } else {
                let length = body.as_ref().map_or(0, Vec::len);
                head.push_str(&format!("Content-Length: {length}\r\n"));
            }
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        let send_body = !bodiless && request.method != "HEAD";
        if let (true, Some(body)) = (send_body, &body) {
            if chunked && !script.until_close {
                for chunk in body.chunks(CHUNK_BYTES) {
                    append_chunk(&mut out, chunk);
                }
                out.extend_from_slice(b"0\r\n\r\n");
            } else {
                out.extend_from_slice(body);
            }
        }
        if stream.get_mut().write_all(&out).await.is_err() {
            return;
        }
        if send_body && body.is_none() && stream_body(stream.get_mut(), &script.body).await.is_err()
        {
            return;
        }
        if close || habits.close_after == Some(served) {
            let _ = stream.get_mut().shutdown().await;
            return;
        }
    }
}

/// Writes each interim response head and flushes it, so it leaves before the final one.
async fn write_interim(
    stream: &mut TcpStream,
    interim: &[(u16, Vec<Header>)],
) -> std::io::Result<()> {
    for (status, headers) in interim {
        let mut head = format!("HTTP/1.1 {status} Interim\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        stream.flush().await?;
    }
    Ok(())
}

fn append_chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

async fn write_chunk(stream: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(data.len() + 16);
    append_chunk(&mut out, data);
    stream.write_all(&out).await
}

/// Writes a streamed body chunk by chunk, as it is made.
async fn stream_body(stream: &mut TcpStream, body: &ScriptBody) -> std::io::Result<()> {
    match body {
        ScriptBody::Generated(chunks) => {
            for index in 0..*chunks {
                write_chunk(stream, &generated_chunk(index)).await?;
            }
        }
        ScriptBody::TwoParts(first, second) => {
            write_chunk(stream, first).await?;
            stream.flush().await?;
            tokio::time::sleep(PAUSE_BETWEEN_PARTS).await;
            write_chunk(stream, second).await?;
        }
        ScriptBody::Fixed(_) | ScriptBody::Counted(_) => {}
    }
    stream.write_all(b"0\r\n\r\n").await
}
