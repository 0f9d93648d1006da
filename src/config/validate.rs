//! Turns the raw file into the runtime [`Config`]: fills defaults, parses units and addresses,
//! checks cross-references, and collects every problem with its line and key.

use super::file::{
    RawAccessLog, RawAdmin, RawCache, RawCertificate, RawConfig, RawHealthCheck, RawHttp2,
    RawHttp3, RawListener, RawRoute, RawServer, RawServerEntry, RawSize, RawUpstream,
};
use super::locate::{KeyPath, SourceMap};
use super::units::{parse_duration, parse_size};
use super::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::ToSocketAddrs;

mod compression;
mod shared;

const DEFAULT_GRACE_PERIOD_SECS: u64 = 10;
const DEFAULT_MAX_REQUEST_HEADER_BYTES: u64 = 64 * 1024;
const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 16 * 1024 * 1024;
const DEFAULT_MAX_REQUEST_LINE_BYTES: u64 = 8 * 1024;
const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
const DEFAULT_KEEPALIVE_TIMEOUT_SECS: u64 = 75;
const DEFAULT_CLIENT_BODY_TIMEOUT_SECS: u64 = 60;
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
const DEFAULT_KEEPALIVE: usize = 32;
const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 1;
const DEFAULT_READ_TIMEOUT_SECS: u64 = 30;
const DEFAULT_WRITE_TIMEOUT_SECS: u64 = 30;
const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
const DEFAULT_RETRIES: usize = 2;
const DEFAULT_MAX_FAILS: u32 = 1;
const DEFAULT_FAIL_TIMEOUT_SECS: u64 = 10;
const DEFAULT_HEALTH_INTERVAL_SECS: u64 = 5;
const DEFAULT_HEALTH_TIMEOUT_SECS: u64 = 1;
const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
const DEFAULT_ACCESS_LOG_BUFFER_LINES: usize = 8192;
const DEFAULT_UPGRADE_SOCKET: &str = "/tmp/parapet_upgrade.sock";
const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;
const DEFAULT_MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
const DEFAULT_STREAM_WINDOW_BYTES: u32 = 1 << 20;
const DEFAULT_H2_CONNECTION_WINDOW_BYTES: u32 = 4 << 20;
const DEFAULT_H3_CONNECTION_WINDOW_BYTES: u32 = 8 << 20;
const DEFAULT_QUIC_IDLE_TIMEOUT_SECS: u64 = 30;
const DEFAULT_CACHE_MAX_BYTES: u64 = 256 << 20;
const DEFAULT_CACHE_MAX_OBJECT_BYTES: u64 = 8 << 20;
const DEFAULT_CACHE_LOCK_TIMEOUT_SECS: u64 = 5;
const DEFAULT_STALE_IF_ERROR_SECS: u64 = 300;
/// Below this, `max_request_header_size` passes but refuses ordinary requests: a warning.
const SMALLEST_WORKABLE_HEADER_BYTES: u64 = 1024;

/// Collects problems (the file is refused) and warnings (keys that do nothing) while building
/// the runtime config.
struct Checker {
    map: SourceMap,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Checker {
    fn problem(&mut self, path: &KeyPath, message: impl Into<String>) {
        let problem = self.at(path, message);
        self.problems.push(problem);
    }

    fn warning(&mut self, path: &KeyPath, message: impl Into<String>) {
        let warning = self.at(path, message);
        self.warnings.push(warning);
    }

    fn at(&self, path: &KeyPath, message: impl Into<String>) -> Problem {
        Problem {
            line: self.map.line_of_path(path),
            key: path.to_string(),
            message: message.into(),
        }
    }

    fn duration(&mut self, value: &Option<String>, path: &KeyPath, default: Duration) -> Duration {
        match value.as_deref().map(parse_duration) {
            None => default,
            Some(Ok(duration)) => duration,
            Some(Err(e)) => {
                self.problem(path, e.to_string());
                default
            }
        }
    }

    fn positive_duration(
        &mut self,
        value: &Option<String>,
        path: &KeyPath,
        default: Duration,
    ) -> Duration {
        let duration = self.duration(value, path, default);
        if duration.is_zero() {
            self.problem(path, "must be greater than 0");
            return default;
        }
        duration
    }

    fn size(&mut self, value: &Option<RawSize>, path: &KeyPath, default: u64) -> u64 {
        match value.as_ref().map(size_in_bytes) {
            None => default,
            Some(Ok(size)) if size > 0 => size,
            Some(Ok(_)) => {
                self.problem(path, "must be greater than 0");
                default
            }
            Some(Err(message)) => {
                self.problem(path, message);
                default
            }
        }
    }

    fn positive(&mut self, value: Option<u32>, path: &KeyPath, default: u32) -> u32 {
        match value {
            Some(0) => {
                self.problem(path, "must be > 0");
                default
            }
            Some(n) => n,
            None => default,
        }
    }
}

/// A size key's value in bytes: a plain number of bytes (`1048576`) or a size string
/// (`"1MiB"`, or digits alone, `"1048576"`).
fn size_in_bytes(raw: &RawSize) -> Result<u64, String> {
    match raw {
        RawSize::Bytes(n) => u64::try_from(*n).map_err(|_| "must not be negative".to_string()),
        RawSize::Text(text) => parse_size(text).map_err(|e| e.to_string()),
    }
}

pub(super) fn parse_and_validate(text: &str, path: &Path) -> Result<Config, Vec<Problem>> {
    let map = SourceMap::new(text);
    let read = super::deserialize::read(text, &map);
    let mut checker = Checker {
        map,
        problems: read.problems,
        warnings: Vec::new(),
    };
    for path in read.unknown {
        checker.problem(&path, "unknown key (conf/parapet.toml lists every key)");
    }
    // Values of the wrong type leave nothing sound to check the rest against.
    let Some(raw) = read.raw else {
        checker.problems.sort_by_key(|p| p.line);
        return Err(checker.problems);
    };
    let mut config = build(&mut checker, raw, path);
    if checker.problems.is_empty() {
        checker.warnings.sort_by_key(|p| p.line);
        config.warnings = checker.warnings;
        Ok(config)
    } else {
        checker.problems.sort_by_key(|p| p.line);
        Err(checker.problems)
    }
}

fn build(checker: &mut Checker, raw: RawConfig, source: &Path) -> Config {
    let root = KeyPath::root();
    let server = build_server(checker, &raw.server, &root.key("server"));
    let listeners = build_listeners(checker, &raw.listener, &root.key("listener"));
    let upstreams = raw
        .upstream
        .iter()
        .map(|(name, upstream)| {
            let path = root.key("upstream").key(name);
            (name.clone(), build_upstream(checker, name, upstream, &path))
        })
        .collect::<BTreeMap<_, _>>();
    let routes = build_routes(checker, &raw.route, &upstreams, &root.key("route"));
    let admin = raw
        .admin
        .as_ref()
        .map(|admin| build_admin(checker, admin, &root.key("admin")));
    if let Some(admin) = &admin {
        if listeners.iter().any(|l| l.address == admin.listen) {
            checker.problem(
                &root.key("admin").key("listen"),
                "the admin address is also a [[listener]] address",
            );
        }
    }
    Config {
        source: source.to_path_buf(),
        server,
        listeners,
        upstreams,
        routes,
        admin,
        access_log: build_access_log(checker, raw.access_log.as_ref(), &root.key("access_log")),
        http2: build_http2(checker, &raw.http2.unwrap_or_default(), &root.key("http2")),
        http3: build_http3(checker, &raw.http3.unwrap_or_default(), &root.key("http3")),
        cache: build_cache(checker, &raw.cache.unwrap_or_default(), &root.key("cache")),
        compression: compression::build(
            checker,
            &raw.compression.unwrap_or_default(),
            &root.key("compression"),
        ),
        warnings: Vec::new(),
    }
}

fn build_admin(checker: &mut Checker, raw: &RawAdmin, path: &KeyPath) -> AdminConfig {
    let text = raw
        .listen
        .clone()
        .unwrap_or_else(|| "127.0.0.1:9901".to_string());
    let listen = text.parse::<SocketAddr>().unwrap_or_else(|_| {
        checker.problem(
            &path.key("listen"),
            format!("invalid address \"{text}\": expected IP:PORT such as \"127.0.0.1:9901\""),
        );
        SocketAddr::from(([127, 0, 0, 1], 9901))
    });
    let token_file = raw.token_file.as_ref().map(PathBuf::from);
    if let Some(file) = &token_file {
        check_token_file(checker, file, &path.key("token_file"));
    }
    if !listen.ip().is_loopback() && token_file.is_none() {
        checker.problem(
            &path.key("listen"),
            format!("admin on non-loopback address {listen} needs a token_file, or anyone who reaches it could reload and purge"),
        );
    }
    let protect_metrics = raw.protect_metrics.unwrap_or(false);
    if protect_metrics && token_file.is_none() {
        checker.warning(
            &path.key("protect_metrics"),
            "protect_metrics = true does nothing without a token_file: /metrics, /healthz and /readyz stay open",
        );
    }
    AdminConfig {
        listen,
        token_file,
        protect_metrics,
    }
}

/// The token is read on every admin request (so it can be rotated without a reload); a file
/// that cannot be read, or holds no token, would refuse every request, so it is refused here.
fn check_token_file(checker: &mut Checker, file: &Path, path: &KeyPath) {
    match std::fs::read_to_string(file) {
        Ok(token) if token.trim().is_empty() => {
            checker.problem(path, format!("{} holds no token", file.display()))
        }
        Ok(_) => {}
        Err(e) => checker.problem(path, format!("cannot read {}: {e}", file.display())),
    }
}

fn build_access_log(
    checker: &mut Checker,
    raw: Option<&RawAccessLog>,
    path: &KeyPath,
) -> AccessLogConfig {
    let target = match raw.and_then(|r| r.target.as_deref()) {
        None | Some("off") => AccessLogTarget::Off,
        Some("stdout") => AccessLogTarget::Stdout,
        Some("") => {
            checker.problem(
                &path.key("target"),
                "use \"off\", \"stdout\" or a file path",
            );
            AccessLogTarget::Off
        }
        Some(file) => AccessLogTarget::File(PathBuf::from(file)),
    };
    if target == AccessLogTarget::Off && raw.is_some_and(|r| r.buffer.is_some()) {
        checker.warning(&path.key("buffer"), "does nothing while target is \"off\"");
    }
    let buffer = match raw.and_then(|r| r.buffer) {
        Some(0) => {
            checker.problem(&path.key("buffer"), "must be > 0");
            DEFAULT_ACCESS_LOG_BUFFER_LINES
        }
        Some(n) => n,
        None => DEFAULT_ACCESS_LOG_BUFFER_LINES,
    };
    AccessLogConfig { target, buffer }
}

fn build_server(checker: &mut Checker, raw: &RawServer, path: &KeyPath) -> ServerSettings {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads = match raw.threads {
        Some(0) => {
            checker.problem(&path.key("threads"), "must be > 0");
            cores
        }
        Some(n) => n,
        None => cores,
    };
    let header_limit = checker.size(
        &raw.max_request_header_size,
        &path.key("max_request_header_size"),
        DEFAULT_MAX_REQUEST_HEADER_BYTES,
    );
    if header_limit < SMALLEST_WORKABLE_HEADER_BYTES {
        checker.warning(
            &path.key("max_request_header_size"),
            format!(
                "{header_limit} bytes refuses most browsers' requests (a typical head is 500-2000 bytes with cookies); nginx allows 1 KiB per line and 8 KiB in all"
            ),
        );
    }
    let line_limit = checker.size(
        &raw.max_request_line_size,
        &path.key("max_request_line_size"),
        DEFAULT_MAX_REQUEST_LINE_BYTES,
    );
    ServerSettings {
        threads,
        grace_period: checker.duration(
            &raw.grace_period,
            &path.key("grace_period"),
            Duration::from_secs(DEFAULT_GRACE_PERIOD_SECS),
        ),
        max_request_header_size: usize::try_from(header_limit).unwrap_or(usize::MAX),
        max_request_body_size: checker.size(
            &raw.max_request_body_size,
            &path.key("max_request_body_size"),
            DEFAULT_MAX_REQUEST_BODY_BYTES,
        ),
        max_request_line_size: usize::try_from(line_limit).unwrap_or(usize::MAX),
        header_timeout: checker.positive_duration(
            &raw.header_timeout,
            &path.key("header_timeout"),
            Duration::from_secs(DEFAULT_HEADER_TIMEOUT_SECS),
        ),
        keepalive_timeout: checker.duration(
            &raw.keepalive_timeout,
            &path.key("keepalive_timeout"),
            Duration::from_secs(DEFAULT_KEEPALIVE_TIMEOUT_SECS),
        ),
        client_body_timeout: checker.positive_duration(
            &raw.client_body_timeout,
            &path.key("client_body_timeout"),
            Duration::from_secs(DEFAULT_CLIENT_BODY_TIMEOUT_SECS),
        ),
        merge_slashes: raw.merge_slashes.unwrap_or(true),
        forward_raw_path: raw.forward_raw_path.unwrap_or(false),
        upgrade_socket: PathBuf::from(
            raw.upgrade_socket
                .as_deref()
                .unwrap_or(DEFAULT_UPGRADE_SOCKET),
        ),
        server_header: build_server_header(checker, raw, path),
    }
}

/// `[server] server_header`: empty or absent sends none.
fn build_server_header(
    checker: &mut Checker,
    raw: &RawServer,
    path: &KeyPath,
) -> Option<http::HeaderValue> {
    let text = raw.server_header.as_deref().filter(|t| !t.is_empty())?;
    match http::HeaderValue::from_str(text) {
        Ok(value) => Some(value),
        Err(_) => {
            checker.problem(
                &path.key("server_header"),
                "must be printable ASCII (a valid header value)",
            );
            None
        }
    }
}

fn build_listeners(
    checker: &mut Checker,
    raw: &[RawListener],
    path: &KeyPath,
) -> Vec<ListenerConfig> {
    if raw.is_empty() {
        checker.problem(path, "at least one [[listener]] is required");
    }
    let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
    let mut listeners = Vec::new();
    for (index, listener) in raw.iter().enumerate() {
        let here = path.index(index);
        let address = match listener.address.parse::<SocketAddr>() {
            Ok(address) => address,
            Err(_) => {
                checker.problem(
                    &here.key("address"),
                    format!(
                        "invalid address \"{}\": expected IP:PORT such as \"127.0.0.1:8080\"",
                        listener.address
                    ),
                );
                continue;
            }
        };
        if let Some(first) = seen.insert(address, index) {
            checker.problem(
                &here.key("address"),
                format!("address {address} is already used by listener[{first}]"),
            );
        }
        let certificates =
            build_certificates(checker, &listener.certificate, &here.key("certificate"));
        let protocols = listener
            .protocols
            .clone()
            .unwrap_or_else(|| vec!["http1".into()]);
        let (mut http1, mut h2c, mut h2, mut h3) = (false, false, false, false);
        for (n, protocol) in protocols.iter().enumerate() {
            match protocol.as_str() {
                "http1" => http1 = true,
                "h2c" => h2c = true,
                "h2" => h2 = true,
                "h3" => h3 = true,
                other => checker.problem(
                    &here.key("protocols").index(n),
                    format!(
                        "unknown protocol \"{other}\" (use \"http1\", \"h2c\", \"h2\" or \"h3\")"
                    ),
                ),
            }
        }
        if protocols.is_empty() {
            checker.problem(&here.key("protocols"), "must name at least one protocol");
        }
        let has_certificates = !listener.certificate.is_empty();
        if (h2 || h3) && !has_certificates {
            checker.problem(
                &here.key("protocols"),
                "\"h2\" and \"h3\" need TLS: add a [[listener.certificate]] with cert and key",
            );
        }
        if h2c && has_certificates {
            checker.problem(
                &here.key("protocols"),
                "\"h2c\" is clear text; on a TLS listener use \"h2\" (negotiated by ALPN)",
            );
        }
        let max_connections = match listener.max_connections {
            Some(0) => {
                checker.problem(&here.key("max_connections"), "must be > 0");
                DEFAULT_MAX_CONNECTIONS
            }
            Some(n) => n,
            None => DEFAULT_MAX_CONNECTIONS,
        };
        listeners.push(ListenerConfig {
            address,
            http1,
            h2c,
            h2,
            h3,
            max_connections,
            certificates,
        });
    }
    listeners
}

fn build_certificates(
    checker: &mut Checker,
    raw: &[RawCertificate],
    path: &KeyPath,
) -> Vec<CertificateConfig> {
    let mut certificates = Vec::new();
    for (index, entry) in raw.iter().enumerate() {
        let (cert, key) = (PathBuf::from(&entry.cert), PathBuf::from(&entry.key));
        match crate::tls::load_certificate(&cert, &key) {
            Ok(loaded) => certificates.push(CertificateConfig {
                cert,
                key,
                loaded: std::sync::Arc::new(loaded),
            }),
            Err(e) => {
                let key_name = if e.is_about_key() { "key" } else { "cert" };
                checker.problem(&path.index(index).key(key_name), e.to_string())
            }
        }
    }
    certificates
}

fn build_upstream_tls(
    checker: &mut Checker,
    raw: &RawServerEntry,
    path: &KeyPath,
) -> Option<UpstreamTls> {
    if raw.tls != Some(true) {
        if raw.sni.is_some() || raw.ca_file.is_some() {
            checker.problem(
                &path.key("tls"),
                "sni and ca_file only apply with tls = true",
            );
        }
        return None;
    }
    let host = raw
        .address
        .rsplit_once(':')
        .map_or(raw.address.as_str(), |(host, _)| host);
    let sni = raw.sni.clone().unwrap_or_else(|| {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string()
    });
    let ca_file = raw.ca_file.as_ref().map(PathBuf::from);
    if let Some(file) = &ca_file {
        if let Err(e) = std::fs::metadata(file) {
            checker.problem(
                &path.key("ca_file"),
                format!("cannot read {}: {e}", file.display()),
            );
        }
    }
    Some(UpstreamTls { sni, ca_file })
}

fn window_size(
    checker: &mut Checker,
    value: &Option<RawSize>,
    path: &KeyPath,
    default: u32,
) -> u32 {
    let size = checker.size(value, path, u64::from(default));
    u32::try_from(size).unwrap_or_else(|_| {
        checker.problem(path, "must be below 4GiB");
        default
    })
}

fn build_cache(checker: &mut Checker, raw: &RawCache, path: &KeyPath) -> CacheConfig {
    let rules = raw
        .rule
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            let here = path.key("rule").index(index);
            if !rule.path.starts_with('/') {
                checker.problem(
                    &here.key("path"),
                    "must start with \"/\" (a glob on the request path)",
                );
            }
            CacheRule {
                glob: rule.path.clone(),
                ttl: checker.duration(&Some(rule.ttl.clone()), &here.key("ttl"), Duration::ZERO),
                force: rule.force.unwrap_or(false),
                cache_set_cookie: rule.cache_set_cookie.unwrap_or(false),
            }
        })
        .collect();
    CacheConfig {
        max_size: checker.size(
            &raw.max_size,
            &path.key("max_size"),
            DEFAULT_CACHE_MAX_BYTES,
        ),
        max_object_size: checker.size(
            &raw.max_object_size,
            &path.key("max_object_size"),
            DEFAULT_CACHE_MAX_OBJECT_BYTES,
        ),
        lock_timeout: checker.positive_duration(
            &raw.lock_timeout,
            &path.key("lock_timeout"),
            Duration::from_secs(DEFAULT_CACHE_LOCK_TIMEOUT_SECS),
        ),
        targeted_field: targeted_field(checker, &raw.targeted_field, &path.key("targeted_field")),
        stale_if_error: checker.duration(
            &raw.stale_if_error,
            &path.key("stale_if_error"),
            Duration::from_secs(DEFAULT_STALE_IF_ERROR_SECS),
        ),
        rules,
        shared: raw
            .shared
            .as_ref()
            .and_then(|shared| shared::build(checker, shared, &path.key("shared"))),
    }
}

/// `[cache] targeted_field`: a field name other than the ones RFC 9213 gives fixed meanings.
fn targeted_field(checker: &mut Checker, raw: &Option<String>, path: &KeyPath) -> http::HeaderName {
    let default = http::HeaderName::from_static(super::DEFAULT_TARGETED_FIELD);
    let Some(text) = raw else { return default };
    match http::HeaderName::from_bytes(text.trim().as_bytes()) {
        Ok(name) if name == http::header::CACHE_CONTROL => {
            checker.problem(path, "must not be Cache-Control (it is the field a targeted field takes precedence over)");
            default
        }
        Ok(name) => name,
        Err(_) => {
            checker.problem(path, format!("{text:?} is not a header field name"));
            default
        }
    }
}

fn build_http2(checker: &mut Checker, raw: &RawHttp2, path: &KeyPath) -> Http2Limits {
    Http2Limits {
        max_concurrent_streams: checker.positive(
            raw.max_concurrent_streams,
            &path.key("max_concurrent_streams"),
            DEFAULT_MAX_CONCURRENT_STREAMS,
        ),
        max_header_list_size: window_size(
            checker,
            &raw.max_header_list_size,
            &path.key("max_header_list_size"),
            DEFAULT_MAX_HEADER_LIST_BYTES,
        ),
        initial_stream_window: window_size(
            checker,
            &raw.initial_stream_window,
            &path.key("initial_stream_window"),
            DEFAULT_STREAM_WINDOW_BYTES,
        ),
        initial_connection_window: window_size(
            checker,
            &raw.initial_connection_window,
            &path.key("initial_connection_window"),
            DEFAULT_H2_CONNECTION_WINDOW_BYTES,
        ),
    }
}

fn build_http3(checker: &mut Checker, raw: &RawHttp3, path: &KeyPath) -> Http3Limits {
    Http3Limits {
        max_concurrent_streams: checker.positive(
            raw.max_concurrent_streams,
            &path.key("max_concurrent_streams"),
            DEFAULT_MAX_CONCURRENT_STREAMS,
        ),
        max_field_section_size: checker.size(
            &raw.max_field_section_size,
            &path.key("max_field_section_size"),
            u64::from(DEFAULT_MAX_HEADER_LIST_BYTES),
        ),
        stream_receive_window: window_size(
            checker,
            &raw.stream_receive_window,
            &path.key("stream_receive_window"),
            DEFAULT_STREAM_WINDOW_BYTES,
        ),
        receive_window: window_size(
            checker,
            &raw.receive_window,
            &path.key("receive_window"),
            DEFAULT_H3_CONNECTION_WINDOW_BYTES,
        ),
        idle_timeout: checker.positive_duration(
            &raw.idle_timeout,
            &path.key("idle_timeout"),
            Duration::from_secs(DEFAULT_QUIC_IDLE_TIMEOUT_SECS),
        ),
    }
}

fn build_upstream(
    checker: &mut Checker,
    name: &str,
    raw: &RawUpstream,
    path: &KeyPath,
) -> UpstreamConfig {
    let balance = build_balance(checker, raw, path);
    if raw.server.is_empty() {
        checker.problem(
            &path.key("server"),
            format!("upstream \"{name}\" has no servers: add [[upstream.{name}.server]]"),
        );
    }
    let mut seen = HashSet::new();
    let mut servers = Vec::new();
    for (index, server) in raw.server.iter().enumerate() {
        let here = path.key("server").index(index);
        let weight = checker.positive(server.weight, &here.key("weight"), 1);
        let fail_timeout = checker.positive_duration(
            &server.fail_timeout,
            &here.key("fail_timeout"),
            Duration::from_secs(DEFAULT_FAIL_TIMEOUT_SECS),
        );
        let address = match resolve(&server.address) {
            Ok(address) => address,
            Err(why) => {
                checker.problem(&here.key("address"), why);
                continue;
            }
        };
        if address.port() == 0 {
            checker.warning(
                &here.key("address"),
                format!("port 0: nothing listens there, so every request sent to {address} fails"),
            );
        }
        if !seen.insert(address) {
            checker.problem(
                &here.key("address"),
                format!("server {address} is listed twice in this upstream"),
            );
        }
        servers.push(ServerConfig {
            address,
            host: written_host(&server.address, address),
            weight,
            max_fails: server.max_fails.unwrap_or(DEFAULT_MAX_FAILS),
            fail_timeout,
            tls: build_upstream_tls(checker, server, &here),
        });
    }
    UpstreamConfig {
        name: name.to_string(),
        balance,
        keepalive: raw.keepalive.unwrap_or(DEFAULT_KEEPALIVE),
        connect_timeout: checker.positive_duration(
            &raw.connect_timeout,
            &path.key("connect_timeout"),
            Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS),
        ),
        read_timeout: checker.positive_duration(
            &raw.read_timeout,
            &path.key("read_timeout"),
            Duration::from_secs(DEFAULT_READ_TIMEOUT_SECS),
        ),
        write_timeout: checker.positive_duration(
            &raw.write_timeout,
            &path.key("write_timeout"),
            Duration::from_secs(DEFAULT_WRITE_TIMEOUT_SECS),
        ),
        idle_timeout: checker.positive_duration(
            &raw.idle_timeout,
            &path.key("idle_timeout"),
            Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
        ),
        retries: raw.retries.unwrap_or(DEFAULT_RETRIES),
        try_when_all_down: raw.try_when_all_down.unwrap_or(true),
        host_header: host_header(checker, &raw.host_header, &path.key("host_header")),
        servers,
        health_check: raw
            .health_check
            .as_ref()
            .map(|check| build_health_check(checker, check, &path.key("health_check"))),
    }
}

/// Accepts `IP:PORT`, or `HOST:PORT` resolved once at load time (the first address wins).
/// The server's address as written, as a `Host` value (the resolved one if it cannot be).
fn written_host(written: &str, resolved: SocketAddr) -> http::HeaderValue {
    http::HeaderValue::from_str(written.trim()).unwrap_or_else(|_| {
        http::HeaderValue::from_str(&resolved.to_string())
            .unwrap_or_else(|_| http::HeaderValue::from_static("localhost"))
    })
}

/// `[upstream.NAME] host_header`: a non-empty host, with an optional port.
fn host_header(
    checker: &mut Checker,
    raw: &Option<String>,
    path: &KeyPath,
) -> Option<http::HeaderValue> {
    let text = raw.as_deref()?.trim();
    match http::uri::Authority::try_from(text) {
        Ok(authority) if !text.is_empty() && !text.contains('@') => {
            http::HeaderValue::from_str(authority.as_str()).ok()
        }
        _ => {
            checker.problem(
                path,
                format!("{text:?} is not a host name with an optional port, such as \"api.internal:8080\""),
            );
            None
        }
    }
}

/// The server's socket address: an IP and port, or a host name resolved now.
fn resolve(address: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = address.parse() {
        return Ok(address);
    }
    let not_host_port =
        || format!("invalid address \"{address}\": expected HOST:PORT such as \"127.0.0.1:9001\"");
    let (host, port) = address.rsplit_once(':').ok_or_else(not_host_port)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(not_host_port());
    }
    match address.to_socket_addrs() {
        Ok(mut found) => found
            .next()
            .ok_or_else(|| format!("host \"{host}\" resolves to no address")),
        Err(e) => Err(format!("cannot resolve host \"{host}\": {e}")),
    }
}

fn build_balance(checker: &mut Checker, raw: &RawUpstream, path: &KeyPath) -> Balance {
    let hash_key = match raw.hash_key.as_deref() {
        None | Some("client_ip") => HashKey::ClientIp,
        Some("uri") => HashKey::Uri,
        Some("host") => HashKey::Host,
        Some(other) => match other
            .strip_prefix("header:")
            .map(http::HeaderName::try_from)
        {
            Some(Ok(name)) => HashKey::Header(name),
            _ => {
                checker.problem(
                    &path.key("hash_key"),
                    format!("invalid hash_key \"{other}\" (use \"client_ip\", \"uri\", \"host\" or \"header:NAME\")"),
                );
                HashKey::ClientIp
            }
        },
    };
    if raw.hash_key.is_some() && raw.balance.as_deref() != Some("hash") {
        checker.warning(
            &path.key("hash_key"),
            "does nothing without balance = \"hash\"",
        );
    }
    match raw.balance.as_deref() {
        None | Some("least_conn") => Balance::LeastConn,
        Some("round_robin") => Balance::RoundRobin,
        Some("random") => Balance::Random,
        Some("hash") => Balance::Hash(hash_key),
        Some(other) => {
            checker.problem(
                &path.key("balance"),
                format!("unknown balance \"{other}\" (use \"least_conn\", \"round_robin\", \"random\" or \"hash\")"),
            );
            Balance::LeastConn
        }
    }
}

fn build_health_check(
    checker: &mut Checker,
    raw: &RawHealthCheck,
    path: &KeyPath,
) -> HealthCheckConfig {
    let kind = match raw.kind.as_deref() {
        None | Some("http") => {
            let expect_status = raw.expect_status.unwrap_or(200);
            if !(100..=599).contains(&expect_status) {
                checker.problem(
                    &path.key("expect_status"),
                    "must be an HTTP status between 100 and 599",
                );
            }
            let path_value = raw.path.clone().unwrap_or_else(|| "/health".to_string());
            if !path_value.starts_with('/') {
                checker.problem(&path.key("path"), "must start with \"/\"");
            }
            HealthCheckKind::Http {
                path: path_value,
                expect_status,
                host: raw.host.clone(),
            }
        }
        Some("tcp") => {
            let http_only = [
                ("path", raw.path.is_some()),
                ("expect_status", raw.expect_status.is_some()),
                ("host", raw.host.is_some()),
            ];
            for (key, set) in http_only {
                if set {
                    checker.warning(&path.key(key), "does nothing with type = \"tcp\"");
                }
            }
            HealthCheckKind::Tcp
        }
        Some(other) => {
            checker.problem(
                &path.key("type"),
                format!("unknown health check type \"{other}\" (use \"http\" or \"tcp\")"),
            );
            HealthCheckKind::Tcp
        }
    };
    HealthCheckConfig {
        kind,
        interval: checker.positive_duration(
            &raw.interval,
            &path.key("interval"),
            Duration::from_secs(DEFAULT_HEALTH_INTERVAL_SECS),
        ),
        timeout: checker.positive_duration(
            &raw.timeout,
            &path.key("timeout"),
            Duration::from_secs(DEFAULT_HEALTH_TIMEOUT_SECS),
        ),
        healthy: checker.positive(raw.healthy, &path.key("healthy"), DEFAULT_HEALTHY_THRESHOLD),
        unhealthy: checker.positive(
            raw.unhealthy,
            &path.key("unhealthy"),
            DEFAULT_UNHEALTHY_THRESHOLD,
        ),
    }
}

fn build_routes(
    checker: &mut Checker,
    raw: &[RawRoute],
    upstreams: &BTreeMap<String, UpstreamConfig>,
    path: &KeyPath,
) -> Vec<RouteConfig> {
    let mut seen = HashMap::new();
    let mut routes = Vec::new();
    for (index, route) in raw.iter().enumerate() {
        let here = path.index(index);
        if !upstreams.contains_key(&route.upstream) {
            let known = upstreams.keys().cloned().collect::<Vec<_>>().join(", ");
            checker.problem(
                &here.key("upstream"),
                format!(
                    "no upstream named \"{}\" (defined: {known})",
                    route.upstream
                ),
            );
        }
        let host = route.host.as_ref().map(|h| h.to_ascii_lowercase());
        if let Some(host) = &host {
            if let Err(e) = crate::route::check_host_pattern(host) {
                checker.problem(&here.key("host"), e.to_string());
            }
        }
        let path_prefix = route.path_prefix.clone().unwrap_or_else(|| "/".to_string());
        if !path_prefix.starts_with('/') {
            checker.problem(&here.key("path_prefix"), "must start with \"/\"");
        }
        if let Some(first) = seen.insert((host.clone(), path_prefix.clone()), index) {
            checker.problem(
                &here.key("path_prefix"),
                format!("the same host and path_prefix as route[{first}]"),
            );
        }
        let name = route
            .name
            .clone()
            .unwrap_or_else(|| format!("{}{}", host.as_deref().unwrap_or("*"), path_prefix));
        routes.push(RouteConfig {
            name,
            host,
            path_prefix,
            upstream: route.upstream.clone(),
            cache: route.cache.unwrap_or(false),
            compress: route.compress.unwrap_or(true),
        });
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid config; other validation tests extend it.
    pub(super) const GOOD: &str = r#"
[[listener]]
address = "127.0.0.1:8080"

[upstream.api]
[[upstream.api.server]]
address = "127.0.0.1:9001"

[[route]]
upstream = "api"
"#;

    fn problems(text: &str) -> Vec<Problem> {
        parse_and_validate(text, Path::new("t.toml"))
            .err()
            .unwrap_or_default()
    }

    #[test]
    fn protect_metrics_defaults_to_off_and_warns_without_a_token_file() {
        let open = format!("{GOOD}\n[admin]\n");
        let config = parse_and_validate(&open, Path::new("t.toml")).expect("valid");
        let admin = config.admin.expect("an [admin] table");
        assert!(!admin.protect_metrics && config.warnings.is_empty());
        let useless = format!("{GOOD}\n[admin]\nprotect_metrics = true\n");
        let config = parse_and_validate(&useless, Path::new("t.toml")).expect("valid");
        assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
        assert_eq!(config.warnings[0].key, "admin.protect_metrics");
    }

    #[test]
    fn a_minimal_config_takes_every_default() {
        let config = parse_and_validate(GOOD, Path::new("t.toml")).expect("valid");
        let api = &config.upstreams["api"];
        assert_eq!(api.balance, Balance::LeastConn);
        assert_eq!(api.retries, DEFAULT_RETRIES);
        assert_eq!(api.servers[0].weight, 1);
        assert_eq!(config.routes[0].path_prefix, "/");
        assert!(config.listeners[0].http1 && !config.listeners[0].h2c);
    }

    #[test]
    fn the_cache_targeted_field_defaults_to_parapets_own_and_must_be_a_field_name() {
        let config = parse_and_validate(GOOD, Path::new("t.toml")).expect("valid");
        assert_eq!(config.cache.targeted_field, "parapet-cache-control");
        let custom = format!("{GOOD}\n[cache]\ntargeted_field = \"X-Edge-Control\"\n");
        let config = parse_and_validate(&custom, Path::new("t.toml")).expect("valid");
        assert_eq!(config.cache.targeted_field, "x-edge-control");
        for bad in ["not a field", "Cache-Control"] {
            let text = format!("{GOOD}\n[cache]\ntargeted_field = \"{bad}\"\n");
            let found = problems(&text);
            assert_eq!(found.len(), 1, "{bad}: {found:?}");
            assert_eq!(found[0].key, "cache.targeted_field");
        }
    }

    #[test]
    fn host_header_takes_a_host_with_an_optional_port() {
        for good in [
            "api.internal",
            "api.internal:8080",
            "10.0.0.1:80",
            "[::1]:8080",
        ] {
            let text = GOOD.replace(
                "[upstream.api]",
                &format!("[upstream.api]\nhost_header = \"{good}\""),
            );
            assert!(problems(&text).is_empty(), "{good}: {:?}", problems(&text));
        }
        for bad in ["", "a b", "user@host", "http://x/"] {
            let text = GOOD.replace(
                "[upstream.api]",
                &format!("[upstream.api]\nhost_header = \"{bad}\""),
            );
            let found = problems(&text);
            assert_eq!(found.len(), 1, "{bad}: {found:?}");
            assert_eq!(found[0].key, "upstream.api.host_header");
        }
    }

    #[test]
    fn unknown_keys_name_their_line_and_path() {
        let found = problems(&GOOD.replace("[upstream.api]", "[upstream.api]\nretires = 3"));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].key, "upstream.api.retires");
        assert_eq!(found[0].line, 6);
        assert!(found[0].message.contains("unknown key"));
    }

    #[test]
    fn every_semantic_problem_is_reported_in_one_run() {
        let text = GOOD
            .replace(
                "address = \"127.0.0.1:9001\"",
                "address = \"127.0.0.1:9001\"\nweight = 0",
            )
            .replace("upstream = \"api\"", "upstream = \"nope\"")
            .replace("[upstream.api]", "[upstream.api]\nconnect_timeout = \"1x\"");
        let keys: Vec<String> = problems(&text).into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "upstream.api.connect_timeout",
                "upstream.api.server[0].weight",
                "route[0].upstream"
            ]
        );
    }

    #[test]
    fn every_size_key_takes_a_plain_byte_count_issue_17() {
        let text = format!(
            "{GOOD}
[server]
max_request_header_size = 1000
max_request_body_size = 1048576
max_request_line_size = 2048
[http2]
max_header_list_size = 3000
initial_stream_window = 70000
initial_connection_window = 80000
[http3]
max_field_section_size = 4000
stream_receive_window = 90000
receive_window = 100000
[cache]
max_size = 1000000
max_object_size = \"5000\"
[cache.shared]
url = \"redis://127.0.0.1:6379\"
max_object_size = 7000
chunk_size = 8000
[compression]
min_length = 10
max_decompressed_size = 6000
"
        );
        let config = parse_and_validate(&text, Path::new("t.toml")).expect("valid");
        let server = &config.server;
        assert_eq!(
            (
                server.max_request_header_size,
                server.max_request_body_size,
                server.max_request_line_size
            ),
            (1000, 1 << 20, 2048)
        );
        assert_eq!(config.http2.max_header_list_size, 3000);
        assert_eq!(config.http2.initial_stream_window, 70000);
        assert_eq!(config.http2.initial_connection_window, 80000);
        assert_eq!(config.http3.max_field_section_size, 4000);
        assert_eq!(config.http3.stream_receive_window, 90000);
        assert_eq!(config.http3.receive_window, 100000);
        assert_eq!(
            (config.cache.max_size, config.cache.max_object_size),
            (1000000, 5000)
        );
        let shared = config.cache.shared.as_ref().expect("the shared tier is on");
        assert_eq!((shared.max_object_size, shared.chunk_size), (7000, 8000));
        assert_eq!(config.compression.min_length, 10);
        assert_eq!(config.compression.bounds.max_decompressed_size, 6000);
        let negative = problems(&format!("{GOOD}\n[server]\nmax_request_body_size = -1\n"));
        assert_eq!(negative.len(), 1, "{negative:?}");
        assert_eq!(negative[0].key, "server.max_request_body_size");
    }

    #[test]
    fn every_wrong_type_is_reported_and_a_blanked_required_key_is_not_reported_twice() {
        let text = GOOD
            .replace(
                "address = \"127.0.0.1:8080\"",
                "address = 8080\nmax_connections = \"many\"",
            )
            .replace(
                "[upstream.api]",
                "[upstream.api]\nretries = [\n  1,\n]\nkeepalive = true",
            );
        let found: Vec<(usize, String)> = problems(&text)
            .into_iter()
            .map(|p| (p.line, p.key))
            .collect();
        assert_eq!(
            found,
            [
                (3, "listener[0].address".to_string()),
                (4, "listener[0].max_connections".to_string()),
                (7, "upstream.api.retries".to_string()),
                (10, "upstream.api.keepalive".to_string()),
            ]
        );
    }

    #[test]
    fn keys_that_do_nothing_are_warnings_not_problems() {
        let text = GOOD.replace("[upstream.api]", "[upstream.api]\nhash_key = \"uri\"")
            + "[upstream.api.health_check]\ntype = \"tcp\"\npath = \"/x\"\n[access_log]\nbuffer = 10\n";
        let config = parse_and_validate(&text, Path::new("t.toml")).expect("valid");
        let keys: Vec<&str> = config.warnings.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "upstream.api.hash_key",
                "upstream.api.health_check.path",
                "access_log.buffer"
            ]
        );
    }

    #[test]
    fn duplicate_listeners_and_empty_upstreams_are_rejected() {
        let text =
            format!("{GOOD}\n[[listener]]\naddress = \"127.0.0.1:8080\"\n[upstream.empty]\n");
        let found = problems(&text);
        assert!(found
            .iter()
            .any(|p| p.key == "listener[1].address" && p.message.contains("already used")));
        assert!(found
            .iter()
            .any(|p| p.key == "upstream.empty.server" && p.line == 14));
    }
}
