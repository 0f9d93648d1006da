//! The load clients: one request template, sent over a bounded set of connections in the plan's
//! protocol, each exchange read to its last byte and classed as a status or a failure kind.
//!
//! Connections open lazily, as the load needs them, up to `--connections`: HTTP/1.1 carries one
//! request at a time per connection (a request waits for a free one past the limit), HTTP/2 and
//! HTTP/3 spread requests round robin over their connections' streams.

mod h3;
mod multiplexed;
mod tcp;
mod tls;

use super::plan::{Plan, Protocol};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Uri};
use std::net::SocketAddr;
use std::time::Instant;

/// What one exchange ended with, when it got no complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No complete response within `--timeout`.
    Timeout,
    /// The connection could not be opened (the reason as the OS gave it).
    Connect(String),
    Tls(String),
    /// The server closed the connection or reset the stream before the response was complete.
    Closed,
    /// The response broke the protocol, or the body stopped early.
    Protocol(String),
}

impl Failure {
    /// The error kind as reports count it.
    pub fn kind(&self) -> String {
        match self {
            Failure::Timeout => "timeout".to_string(),
            Failure::Connect(reason) => format!("connect: {reason}"),
            Failure::Tls(reason) => format!("tls: {reason}"),
            Failure::Closed => "closed before the response ended".to_string(),
            Failure::Protocol(reason) => format!("protocol: {reason}"),
        }
    }
}

/// A complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body_bytes: u64,
}

/// The one request a plan sends, in the shapes each protocol wants.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    method: Method,
    /// `scheme://authority/path?query` for HTTP/2 and HTTP/3.
    absolute: Uri,
    /// `/path?query` for HTTP/1.1.
    origin_form: Uri,
    headers: HeaderMap,
    body: Bytes,
}

const USER_AGENT: &str = concat!("parapet-load/", env!("CARGO_PKG_VERSION"));

impl RequestTemplate {
    pub fn new(plan: &Plan) -> Result<RequestTemplate, String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(USER_AGENT),
        );
        for (name, value) in &plan.headers {
            headers.insert(name.clone(), value.clone());
        }
        let absolute: Uri = plan.url.url.parse().map_err(|e| format!("{e}"))?;
        let origin_form: Uri = plan
            .url
            .path_and_query
            .parse()
            .map_err(|e| format!("{e}"))?;
        Ok(RequestTemplate {
            method: plan.method.clone(),
            absolute,
            origin_form,
            headers,
            body: plan.body.clone(),
        })
    }

    fn build<B>(&self, uri: &Uri, body: B) -> http::Request<B> {
        let mut request = http::Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }

    /// Origin form and a `Host` header (unless the plan gives one).
    fn http1<B>(&self, authority: &HeaderValue, body: B) -> http::Request<B> {
        let mut request = self.build(&self.origin_form, body);
        if !request.headers().contains_key(http::header::HOST) {
            request
                .headers_mut()
                .insert(http::header::HOST, authority.clone());
        }
        request
    }

    fn absolute<B>(&self, body: B) -> http::Request<B> {
        self.build(&self.absolute, body)
    }
}

/// A client for one plan: its protocol's connection set.
pub enum Client {
    Http1(tcp::Http1Pool),
    Http2(multiplexed::Multiplexed<tcp::Http2Opener>),
    Http3(multiplexed::Multiplexed<h3::H3Opener>),
}

impl Client {
    /// Resolves the target and prepares TLS; connections open later, as requests need them.
    pub async fn new(plan: &Plan) -> Result<Client, String> {
        let template = RequestTemplate::new(plan)
            .map_err(|e| format!("{}: not a request target: {e}", plan.url.url))?;
        let address = resolve(&plan.url.host, plan.url.port).await?;
        let cacert = plan.cacert.as_deref();
        Ok(match plan.protocol {
            Protocol::Http1 => {
                let connector = tcp::Connector::new(address, &plan.url, cacert, b"http/1.1")?;
                Client::Http1(tcp::Http1Pool::new(connector, template, plan.connections)?)
            }
            Protocol::Http2 => {
                let connector = tcp::Connector::new(address, &plan.url, cacert, b"h2")?;
                let opener = tcp::Http2Opener::new(connector, template);
                Client::Http2(multiplexed::Multiplexed::new(opener, plan.connections))
            }
            Protocol::Http3 => {
                let opener = h3::H3Opener::new(address, &plan.url, cacert, template)?;
                Client::Http3(multiplexed::Multiplexed::new(opener, plan.connections))
            }
        })
    }

    /// Sends the request and reads the whole response. `sent_at` is set when the request got a
    /// connection and started out, so that the caller can tell how late it left.
    pub async fn send(&self, sent_at: &mut Option<Instant>) -> Result<Answer, Failure> {
        match self {
            Client::Http1(pool) => pool.send(sent_at).await,
            Client::Http2(set) => set.send(sent_at).await,
            Client::Http3(set) => set.send(sent_at).await,
        }
    }
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))
}
