//! Configuration: the TOML file under `conf/` read into typed, validated runtime structs.
//!
//! Pipeline: text → `file::RawConfig` (`deserialize`: serde, every wrong type and unknown key
//! collected) → `validate::build`
//! (units, addresses, cross-references; every problem collected) → [`Config`], which has no
//! open defaults left. Every problem is reported as `FILE:LINE:key: message`.

mod deserialize;
pub mod effective;
mod file;
pub mod locate;
pub mod start_only;
pub mod units;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use locate::KeyPath;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub server: ServerSettings,
    pub listeners: Vec<ListenerConfig>,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    pub admin: Option<AdminConfig>,
    pub access_log: AccessLogConfig,
    pub http2: Http2Limits,
    pub http3: Http3Limits,
    pub cache: CacheConfig,
    pub compression: crate::compress::CompressionConfig,
    /// Keys that do nothing as written (e.g. `hash_key` without `balance = "hash"`); the
    /// config is valid, `parapet check` and the start log show them.
    pub warnings: Vec<Problem>,
}

/// Default `[cache] targeted_field`: Parapet's own RFC 9213 targeted field.
pub const DEFAULT_TARGETED_FIELD: &str = "parapet-cache-control";

/// The edge cache (`[cache]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Total bytes stored, bodies and headers (default 256 MiB).
    pub max_size: u64,
    /// Larger responses pass through uncached (default 8 MiB).
    pub max_object_size: u64,
    /// Longest wait for another request's fill of the same key (default 5 s).
    pub lock_timeout: Duration,
    /// RFC 9213 targeted field whose directives govern storing and freshness before
    /// CDN-Cache-Control and Cache-Control (default `Parapet-Cache-Control`).
    pub targeted_field: http::HeaderName,
    /// How long a stale response may stand in for a failing origin when the response names
    /// no `stale-if-error` of its own and allows serving stale (default 5 min; 0 = never).
    pub stale_if_error: Duration,
    pub rules: Vec<CacheRule>,
    /// The shared second tier (`[cache.shared]`); `None`: this instance's cache only.
    pub shared: Option<SharedCacheConfig>,
}

/// The shared cache tier on Redis (`[cache.shared]`), read once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCacheConfig {
    /// `redis://[user@]host:port/db` or `rediss://` for TLS.
    pub url: String,
    /// Read from `password_file` (trailing newline removed); sent with AUTH.
    pub password: Option<Secret>,
    /// PEM roots for `rediss://` instead of the system's (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// Prefix of every key and channel name, so one Redis can serve several clusters
    /// (default `parapet:`).
    pub key_prefix: String,
    /// Per Redis operation; past it the request carries on without L2 (default 50 ms).
    pub timeout: Duration,
    /// Larger responses stay in L1 only (default 1 MiB).
    pub max_object_size: u64,
    /// Bodies above it are split over several keys of this size (default 256 KiB).
    pub chunk_size: u64,
    /// Multiplexed connections, each pipelining many operations (default 2).
    pub pool_size: usize,
    /// Longest wait for another instance's fill of the same key (default 5 s).
    pub lock_timeout: Duration,
    /// Consecutive failures that open the circuit breaker (default 5).
    pub breaker_failures: u32,
    /// How long an open breaker keeps Redis out before one probe (default 1 s).
    pub breaker_cooldown: Duration,
}

impl SharedCacheConfig {
    /// `url` without the `user:password@` part, for logs, the status page and `/config`.
    pub fn url_without_credentials(&self) -> String {
        let url = &self.url;
        match (url.find("://"), url.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                format!("{}{}", &url[..scheme_end + 3], &url[at + 1..])
            }
            _ => url.clone(),
        }
    }
}

/// A value that `Debug` does not print.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// An edge rule (`[[cache.rule]]`): applies to request paths matching `glob`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRule {
    pub glob: String,
    /// Freshness when the origin gives none (or always, with `force`).
    pub ttl: Duration,
    /// Replace the origin's freshness; never overrides no-store or private.
    pub force: bool,
    /// Store responses carrying Set-Cookie, with Set-Cookie removed from the stored copy.
    pub cache_set_cookie: bool,
}

/// HTTP/2 limits for clients (TLS h2 and h2c).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http2Limits {
    pub max_concurrent_streams: u32,
    pub max_header_list_size: u32,
    pub initial_stream_window: u32,
    pub initial_connection_window: u32,
}

/// HTTP/3 and QUIC limits for clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http3Limits {
    pub max_concurrent_streams: u32,
    pub max_field_section_size: u64,
    pub stream_receive_window: u32,
    pub receive_window: u32,
    pub idle_timeout: Duration,
}

/// A certificate of a TLS listener, loaded and checked at config time.
#[derive(Debug, Clone)]
pub struct CertificateConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub loaded: std::sync::Arc<crate::tls::LoadedCertificate>,
}

/// TLS to an upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Server name sent and verified (default: the host of `address`).
    pub sni: String,
    /// Extra CA bundle trusted for this server (default: the system's roots).
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// File holding the bearer token; `None` disables the mutating endpoints and leaves the
    /// read-only ones open.
    pub token_file: Option<PathBuf>,
    /// `/metrics`, `/healthz` and `/readyz` need the token too (only with `token_file`).
    pub protect_metrics: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub target: AccessLogTarget,
    /// Lines buffered between the request path and the writer; past it lines are dropped
    /// and counted (default 8192).
    pub buffer: usize,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Worker threads per listener service (default: CPU cores).
    pub threads: usize,
    /// Longest drain on SIGTERM (default 10 s).
    pub grace_period: Duration,
    /// Largest request head accepted before 431 (default 64 KiB).
    pub max_request_header_size: usize,
    /// Largest request body accepted before 413 (default 16 MiB).
    pub max_request_body_size: u64,
    /// Longest request target accepted before 414 (default 8 KiB).
    pub max_request_line_size: usize,
    /// A request head not complete this long after its first byte gets 408 and the
    /// connection is closed; also how long a new connection may stay silent (default 10 s).
    pub header_timeout: Duration,
    /// How long an idle client keep-alive connection is kept; zero turns keep-alive off
    /// (default 75 s).
    pub keepalive_timeout: Duration,
    /// A client that sends no request body byte for this long gets 408 and a close; the
    /// upstream's `read_timeout` only runs once the request was sent whole (default 60 s).
    pub client_body_timeout: Duration,
    /// Runs of `/` in a request path count as one for routing, caching and forwarding, as
    /// nginx's `merge_slashes on` (default true).
    pub merge_slashes: bool,
    /// The upstream gets the request target as the client sent it instead of its normalised
    /// form; routing and the cache key still use the normalised path (default false).
    pub forward_raw_path: bool,
    /// Unix socket over which listening sockets pass to a new process on upgrade.
    pub upgrade_socket: PathBuf,
    /// `Server` on every response when set; none by default.
    pub server_header: Option<http::HeaderValue>,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    pub http1: bool,
    pub h2c: bool,
    /// HTTP/2 over TLS, offered by ALPN.
    pub h2: bool,
    /// HTTP/3 over QUIC on the same port (UDP).
    pub h3: bool,
    /// Client connections open at once; those beyond are accepted and closed at once, and
    /// counted (default 10000).
    pub max_connections: usize,
    /// Non-empty for a TLS listener; the first is the default certificate.
    pub certificates: Vec<CertificateConfig>,
}

impl ListenerConfig {
    pub fn is_tls(&self) -> bool {
        !self.certificates.is_empty()
    }

    /// The SNI index of the listener's certificates.
    pub fn certificate_set(&self) -> crate::tls::CertificateSet {
        let loaded: Vec<_> = self
            .certificates
            .iter()
            .map(|c| std::sync::Arc::clone(&c.loaded))
            .collect();
        crate::tls::CertificateSet::new(&loaded)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    LeastConn,
    RoundRobin,
    Random,
    Hash(HashKey),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Uri,
    Host,
    Header(http::HeaderName),
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub balance: Balance,
    /// Idle keep-alive connections kept per server (default 32).
    pub keepalive: usize,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    /// Further tries on another server when connecting fails (default 2).
    pub retries: usize,
    /// Every server down: forget passive failures and try them anyway (default true).
    pub try_when_all_down: bool,
    /// `Host` sent upstream for a request that has none (HTTP/1.0); `None`: each server's
    /// address as written, as nginx's `$proxy_host`.
    pub host_header: Option<http::HeaderValue>,
    pub servers: Vec<ServerConfig>,
    pub health_check: Option<HealthCheckConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub address: SocketAddr,
    /// The address as the config writes it (`api.internal:8080`), the default upstream `Host`.
    pub host: http::HeaderValue,
    pub weight: u32,
    /// Passive health: failures within `fail_timeout` that mark the server down (0 = off).
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub tls: Option<UpstreamTls>,
}

#[derive(Debug, Clone)]
pub enum HealthCheckKind {
    Http {
        path: String,
        expect_status: u16,
        host: Option<String>,
    },
    Tcp,
}

#[derive(Debug, Clone)]
pub struct HealthCheckConfig {
    pub kind: HealthCheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy: u32,
    pub unhealthy: u32,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// The `route` label in metrics and logs (default: host + path prefix).
    pub name: String,
    /// Exact host or `*.suffix`; `None` matches any host.
    pub host: Option<String>,
    pub path_prefix: String,
    pub upstream: String,
    /// Responses on this route go through the edge cache (default false).
    pub cache: bool,
    /// Responses on this route may be compressed or decoded (default true).
    pub compress: bool,
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub key: String,
    pub message: String,
}

/// Why a config could not be loaded: every problem found, each naming file, line and key.
#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl Problem {
    /// `FILE:LINE:KEY: message` (line and key when known).
    pub fn located(&self, file: &str) -> String {
        match (self.line, self.key.is_empty()) {
            (0, _) => format!("{file}: {}", self.message),
            (line, true) => format!("{file}:{line}: {}", self.message),
            (line, false) => format!("{file}:{line}:{}: {}", self.key, self.message),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, problem) in self.problems.iter().enumerate() {
            if n > 0 {
                writeln!(f)?;
            }
            f.write_str(&problem.located(&self.file))?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            problems: vec![Problem {
                line: 0,
                key: String::new(),
                message: format!("cannot read the config file: {e}"),
            }],
        })?;
        Self::parse(&text, path)
    }

    /// `FILE:LINE:KEY` of one of this config's keys, the file read again: for problems found
    /// once the config is in use (a listener's port taken by another process).
    pub fn location_of(&self, path: &KeyPath) -> String {
        let text = std::fs::read_to_string(&self.source).unwrap_or_default();
        let line = locate::SourceMap::new(&text).line_of_path(path);
        format!("{}:{line}:{path}", self.source.display())
    }

    /// The warnings, each as `FILE:LINE:KEY: warning: message`.
    pub fn warning_lines(&self) -> Vec<String> {
        let file = self.source.display().to_string();
        self.warnings
            .iter()
            .map(|w| {
                let message = format!("warning: {}", w.message);
                Problem {
                    message,
                    ..w.clone()
                }
                .located(&file)
            })
            .collect()
    }

    /// Logs the warnings (at start and on each reload).
    pub fn log_warnings(&self) {
        for line in self.warning_lines() {
            tracing::warn!("{line}");
        }
    }

    /// Validates `text` as if read from `path` (used by `load` and by tests).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        validate::parse_and_validate(text, path).map_err(|problems| ConfigError {
            file: path.display().to_string(),
            problems,
        })
    }
}
