//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/upstreams`, `/config`, the status
//! page (`/` and `/status.json`), and the mutating `POST /reload`, `POST /purge` and `PURGE URL`.
//!
//! With `[admin] token_file` set, every endpoint but the static page needs
//! `Authorization: Bearer <token>` (`/metrics`, `/healthz` and `/readyz` only with
//! `protect_metrics = true`); the mutating ones are refused without a `token_file`. See
//! [`auth`] for the header, the comparison and the per-address lockout.

mod auth;
mod status;

use crate::config::{effective, AdminConfig};
use crate::control::Control;
use crate::metrics;
use async_trait::async_trait;
use auth::{Failure, Guard, Lockout};
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves the admin endpoints.
pub struct Admin {
    control: Arc<Control>,
    lockout: Lockout,
}

impl Admin {
    pub fn new(control: Arc<Control>) -> Self {
        Admin {
            control,
            lockout: Lockout::default(),
        }
    }
}

/// Registers `parapet_admin_auth_failures_total`.
pub fn register_metrics() {
    auth::register_metrics();
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Vec<u8>>) -> Response<Vec<u8>> {
    let body = body.into();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_default()
}

fn json_reply(status: StatusCode, value: &Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    reply(status, JSON, body)
}

/// Every path the listener knows; any other is 404, a known one with another method 405.
const KNOWN_PATHS: [&str; 9] = [
    "/",
    "/status.json",
    "/metrics",
    "/healthz",
    "/readyz",
    "/upstreams",
    "/config",
    "/reload",
    "/purge",
];

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        // Drain any request body so the connection stays usable; the endpoints take none.
        while let Ok(Some(_)) = session.read_request_body().await {}
        let purge_method = method.as_str() == "PURGE";
        if !purge_method && !KNOWN_PATHS.contains(&path.as_str()) {
            return reply(StatusCode::NOT_FOUND, TEXT, "not found\n");
        }
        let admin = self.control.admin().unwrap_or_else(|| AdminConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            token_file: None,
            protect_metrics: false,
        });
        let label = if purge_method { "PURGE" } else { path.as_str() };
        let guard = auth::guard_of(&path, purge_method, &admin);
        self.refusal(session, &admin, guard, label)
            .unwrap_or_else(|| self.serve(session, &method, &path))
    }
}

impl Admin {
    /// The endpoint's answer, once the request has passed its guard.
    fn serve(&self, session: &ServerSession, method: &Method, path: &str) -> Response<Vec<u8>> {
        match (method, path) {
            (&Method::GET, "/") => status::page(),
            (&Method::GET, "/status.json") => {
                json_reply(StatusCode::OK, &status::snapshot(&self.control.runtime()))
            }
            (&Method::GET, "/metrics") => self.metrics(),
            (&Method::GET, "/healthz") => reply(StatusCode::OK, TEXT, "ok\n"),
            (&Method::GET, "/readyz") => self.readyz(),
            (&Method::GET, "/upstreams") => self.upstreams(),
            (&Method::GET, "/config") => json_reply(StatusCode::OK, &self.effective_config()),
            (&Method::POST, "/reload") => self.reload(),
            (&Method::POST, "/purge") => purge(session.req_header().uri.query().unwrap_or("")),
            (method, _) if method.as_str() == "PURGE" => {
                purge_urls(&purge_targets(session.req_header()))
            }
            _ => reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n"),
        }
    }

    /// `None` when the request passes its guard, else the refusal: 401 (no or wrong token) or
    /// 429 (this address is locked out after too many wrong tokens).
    fn refusal(
        &self,
        session: &ServerSession,
        admin: &AdminConfig,
        guard: Guard,
        path: &str,
    ) -> Option<Response<Vec<u8>>> {
        let expected = match guard {
            Guard::Open => return None,
            Guard::TokenIfSet if admin.token_file.is_none() => return None,
            Guard::Token | Guard::TokenIfSet => auth::expected_token(admin),
        };
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let Some(expected) = expected else {
            tracing::warn!(client = ?client, path, "admin request refused: no token_file configured (or it is empty/unreadable)");
            return Some(json_reply(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "this endpoint needs [admin] token_file"}),
            ));
        };
        let now = Instant::now();
        if let Some(wait) = client.and_then(|ip| self.lockout.locked_for(ip, now)) {
            auth::count(Failure::RateLimited);
            tracing::warn!(client = ?client, path, "admin request refused: too many wrong tokens from this address");
            return Some(too_many_failures(auth::retry_after_secs(wait)));
        }
        match auth::presented_token(&session.req_header().headers) {
            Some(presented)
                if auth::constant_time_eq(expected.as_bytes(), presented.as_bytes()) =>
            {
                None
            }
            presented => {
                let failure = if presented.is_some() {
                    Failure::Wrong
                } else {
                    Failure::Missing
                };
                Some(self.refuse(client, path, failure, now))
            }
        }
    }

    /// The 401 for a missing or wrong token; a wrong one counts toward the address's lockout.
    fn refuse(
        &self,
        client: Option<IpAddr>,
        path: &str,
        failure: Failure,
        now: Instant,
    ) -> Response<Vec<u8>> {
        auth::count(failure);
        if let (Failure::Wrong, Some(ip)) = (failure, client) {
            self.lockout.fail(ip, now);
        }
        tracing::warn!(client = ?client, path, token_present = failure == Failure::Wrong, "admin request refused: wrong or missing bearer token");
        let mut response = json_reply(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "missing or wrong bearer token"}),
        );
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        response
    }

    fn metrics(&self) -> Response<Vec<u8>> {
        crate::upstream::metrics::refresh_gauges(self.control.runtime().upstreams.iter());
        crate::cache::refresh_gauges();
        reply(StatusCode::OK, PROMETHEUS_TEXT, metrics::render())
    }

    fn readyz(&self) -> Response<Vec<u8>> {
        let runtime = self.control.runtime();
        let down: Vec<&String> = runtime
            .upstreams
            .iter()
            .filter(|(_, u)| u.healthy_count() == 0)
            .map(|(name, _)| name)
            .collect();
        if down.is_empty() {
            reply(StatusCode::OK, TEXT, "ready\n")
        } else {
            let names: Vec<&str> = down.iter().map(|n| n.as_str()).collect();
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                format!(
                    "not ready: no healthy server in upstream {}\n",
                    names.join(", ")
                ),
            )
        }
    }

    fn upstreams(&self) -> Response<Vec<u8>> {
        let groups = status::upstream_groups(&self.control.runtime(), Instant::now());
        json_reply(StatusCode::OK, &groups)
    }

    /// The config in force with every default filled in, and the file's changes that wait
    /// for an upgrade. Secrets are never shown.
    fn effective_config(&self) -> Value {
        let in_force = self.control.in_force();
        let mut shown = effective::render(&in_force.config);
        shown["pending_upgrade"] = in_force
            .pending_upgrade
            .iter()
            .map(|p| json!({"key": p.key, "running": p.running, "in_file": p.in_file, "note": p.describe()}))
            .collect();
        shown
    }

    fn reload(&self) -> Response<Vec<u8>> {
        match self.control.reload() {
            Ok(report) => json_reply(
                StatusCode::OK,
                &json!({"reloaded": true, "config_hash": report.config_hash,
                        "pending_upgrade": report.pending_upgrade.iter().map(|p| p.describe()).collect::<Vec<_>>()}),
            ),
            Err(e) => json_reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({"reloaded": false, "error": e.to_string()}),
            ),
        }
    }
}

/// 429 for an address locked out after too many wrong tokens.
fn too_many_failures(retry_after: u64) -> Response<Vec<u8>> {
    let mut response = json_reply(
        StatusCode::TOO_MANY_REQUESTS,
        &json!({"error": "too many wrong tokens from this address", "retry_after_seconds": retry_after}),
    );
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from(retry_after),
    );
    response
}

/// `POST /purge?url=URL` (every variant of one URL), `?prefix=URL-PREFIX` or `?glob=PATTERN`,
/// URLs written as stored: `scheme://host:port/path?query`.
fn purge(query: &str) -> Response<Vec<u8>> {
    let params: Vec<(String, String)> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let url = get("url").map(|u| crate::cache::normalize_url(&u).unwrap_or(u));
    let (prefix, glob) = (get("prefix"), get("glob"));
    if url.is_none() && prefix.is_none() && glob.is_none() {
        return json_reply(
            StatusCode::BAD_REQUEST,
            &json!({"error": "give url=, prefix= or glob="}),
        );
    }
    let purged = crate::cache::purge(url.as_deref(), prefix.as_deref(), glob.as_deref());
    tracing::info!(url = ?url, prefix = ?prefix, glob = ?glob, purged, "cache purge");
    json_reply(StatusCode::OK, &json!({ "purged": purged }))
}

/// The URLs a `PURGE` names: its absolute request target (`PURGE http://host:port/path`),
/// or, Varnish-style, `PURGE /path` with `Host: cached-host:port` (both schemes).
fn purge_targets(req: &pingora::http::RequestHeader) -> Vec<String> {
    if req.uri.scheme().is_some() {
        return crate::cache::normalize_url(&req.uri.to_string())
            .into_iter()
            .collect();
    }
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok());
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    host.map(|host| {
        ["http", "https"]
            .iter()
            .map(|scheme| crate::cache::key::url(scheme, host, path))
            .collect()
    })
    .unwrap_or_default()
}

/// Purges every stored variant of each URL.
fn purge_urls(urls: &[String]) -> Response<Vec<u8>> {
    if urls.is_empty() {
        return json_reply(
            StatusCode::BAD_REQUEST,
            &json!({"error": "PURGE needs an absolute URL (PURGE http://host/path) or a path with the cached Host"}),
        );
    }
    let purged: usize = urls
        .iter()
        .map(|url| crate::cache::purge(Some(url), None, None))
        .sum();
    tracing::info!(urls = ?urls, purged, "cache purge");
    json_reply(StatusCode::OK, &json!({ "purged": purged }))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
