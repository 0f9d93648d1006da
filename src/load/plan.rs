//! The load plan: every field's parser, a partial plan from one source (flags or a plan file),
//! the merge of the two, and the complete, checked [`Plan`] a run uses.

use super::stages::{Shape, Stage};
use super::threshold::Threshold;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Uri};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Connections opened at most for HTTP/1.1 (one request at a time on each), opened as needed.
pub const DEFAULT_HTTP1_CONNECTIONS: usize = 256;
/// Connections for HTTP/2 and HTTP/3, each carrying many streams (Parapet allows 100 by default).
pub const DEFAULT_MULTIPLEXED_CONNECTIONS: usize = 4;
/// Longest a request may take, from when it is due until its last body byte.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;

/// The client protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2: by ALPN over TLS, prior knowledge (h2c) over clear text.
    Http2,
    /// HTTP/3 over QUIC; https URLs only.
    Http3,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Http3 => "http3",
        }
    }

    pub fn parse(text: &str) -> Result<Protocol, String> {
        match text {
            "http1" => Ok(Protocol::Http1),
            "http2" => Ok(Protocol::Http2),
            "http3" => Ok(Protocol::Http3),
            _ => Err(format!(
                "unknown protocol \"{text}\" (use http1, http2 or http3)"
            )),
        }
    }

    fn default_connections(self) -> usize {
        match self {
            Protocol::Http1 => DEFAULT_HTTP1_CONNECTIONS,
            Protocol::Http2 | Protocol::Http3 => DEFAULT_MULTIPLEXED_CONNECTIONS,
        }
    }
}

/// A URL split into what the clients need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// `host:port` as written (port included only when written).
    pub authority: String,
    pub path_and_query: String,
}

impl Target {
    /// An `http://` or `https://` URL with a host.
    pub fn parse(text: &str) -> Result<Target, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("\"{text}\" is not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "\"{text}\": the URL must start with http:// or https://"
                ))
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("\"{text}\": the URL has no host"))?;
        let host = authority.host().trim_matches(['[', ']']).to_string();
        Ok(Target {
            url: text.to_string(),
            https,
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            authority: authority.as_str().to_string(),
            host,
            path_and_query: uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string()),
        })
    }
}

/// Where the report goes, and in which form (by the file's extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportFile {
    Json(PathBuf),
    Html(PathBuf),
}

impl ReportFile {
    pub fn parse(path: &Path) -> Result<ReportFile, String> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Ok(ReportFile::Json(path.to_path_buf())),
            Some("html") | Some("htm") => Ok(ReportFile::Html(path.to_path_buf())),
            _ => Err(format!(
                "\"{}\": the report file must end in .json or .html",
                path.display()
            )),
        }
    }
}

/// `Name: value` (or `Name:value`).
pub fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("header \"{text}\": expected NAME:VALUE"))?;
    header(name.trim(), value.trim())
}

pub fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("\"{name}\" is not a valid header name"))?;
    let value = HeaderValue::from_str(value)
        .map_err(|_| format!("header {name}: \"{value}\" is not a valid value"))?;
    Ok((name, value))
}

pub fn parse_method(text: &str) -> Result<Method, String> {
    Method::from_bytes(text.as_bytes()).map_err(|_| format!("\"{text}\" is not an HTTP method"))
}

pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let timeout = crate::config::units::parse_duration(text).map_err(|e| e.to_string())?;
    if timeout.is_zero() {
        return Err("the timeout must be greater than 0".to_string());
    }
    Ok(timeout)
}

pub fn parse_connections(count: usize) -> Result<usize, String> {
    match count {
        0 => Err("must be at least 1".to_string()),
        n => Ok(n),
    }
}

/// The body file's bytes.
pub fn read_body(path: &Path) -> Result<Bytes, String> {
    std::fs::read(path)
        .map(Bytes::from)
        .map_err(|e| format!("cannot read \"{}\": {e}", path.display()))
}

/// Fields given by one source; each already checked on its own.
#[derive(Debug, Clone, Default)]
pub struct PartialPlan {
    pub url: Option<Target>,
    pub stages: Option<Vec<Stage>>,
    pub thresholds: Vec<Threshold>,
    pub admin: Option<Target>,
    pub report: Option<ReportFile>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub method: Option<Method>,
    pub body: Option<Bytes>,
    pub protocol: Option<Protocol>,
    pub connections: Option<usize>,
    pub timeout: Option<Duration>,
    pub cacert: Option<PathBuf>,
}

impl PartialPlan {
    /// This plan with `flags` on top: a field the flags give replaces the plan's; headers and
    /// thresholds are added (a header named again replaces the plan's value).
    pub fn overridden_by(self, flags: PartialPlan) -> PartialPlan {
        PartialPlan {
            url: flags.url.or(self.url),
            stages: flags.stages.or(self.stages),
            thresholds: [self.thresholds, flags.thresholds].concat(),
            admin: flags.admin.or(self.admin),
            report: flags.report.or(self.report),
            headers: [self.headers, flags.headers].concat(),
            method: flags.method.or(self.method),
            body: flags.body.or(self.body),
            protocol: flags.protocol.or(self.protocol),
            connections: flags.connections.or(self.connections),
            timeout: flags.timeout.or(self.timeout),
            cacert: flags.cacert.or(self.cacert),
        }
    }

    /// The complete plan, or every missing or contradictory field.
    pub fn complete(self, source: String) -> Result<Plan, Vec<String>> {
        let mut problems = Vec::new();
        if self.url.is_none() {
            problems.push("no URL to load: give --url (or url in the plan file)".to_string());
        }
        if self.stages.is_none() {
            problems.push(
                "no stages: give --stages D:RATE[,D:RATE…] (or [[stage]] tables in the plan file)"
                    .to_string(),
            );
        }
        let protocol = self.protocol.unwrap_or(Protocol::Http1);
        let (Some(url), Some(stages)) = (self.url, self.stages) else {
            return Err(problems);
        };
        if protocol == Protocol::Http3 && !url.https {
            problems.push(format!("{}: HTTP/3 needs an https:// URL", url.url));
        }
        let shape = Shape::new(&stages);
        if shape.total_requests() == 0 {
            problems.push("the stages send no request: give a rate above 0".to_string());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Plan {
            source,
            url,
            shape,
            stages,
            thresholds: self.thresholds,
            admin: self.admin,
            report: self.report,
            headers: self.headers,
            method: self.method.unwrap_or(Method::GET),
            body: self.body.unwrap_or_default(),
            connections: self
                .connections
                .unwrap_or_else(|| protocol.default_connections()),
            protocol,
            timeout: self
                .timeout
                .unwrap_or(Duration::from_secs(DEFAULT_TIMEOUT_SECS)),
            cacert: self.cacert,
        })
    }
}

/// A complete, checked plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// "command line" or the plan file's path.
    pub source: String,
    pub url: Target,
    pub stages: Vec<Stage>,
    pub shape: Shape,
    pub thresholds: Vec<Threshold>,
    /// Parapet's admin listener, scraped for the proxy/upstream split.
    pub admin: Option<Target>,
    pub report: Option<ReportFile>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub method: Method,
    pub body: Bytes,
    pub protocol: Protocol,
    /// Most connections open at once.
    pub connections: usize,
    pub timeout: Duration,
    /// Extra CA certificates (PEM) trusted for https URLs, besides the system's.
    pub cacert: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages() -> Option<Vec<Stage>> {
        Some(super::super::stages::parse_stage_list("1s:10").unwrap())
    }

    #[test]
    fn urls_keep_what_the_clients_need() {
        let target = Target::parse("https://localhost:8443/api/items?page=2").unwrap();
        assert!(target.https);
        assert_eq!(target.host, "localhost");
        assert_eq!(target.port, 8443);
        assert_eq!(target.authority, "localhost:8443");
        assert_eq!(target.path_and_query, "/api/items?page=2");
        let bare = Target::parse("http://127.0.0.1").unwrap();
        assert_eq!((bare.port, bare.path_and_query.as_str()), (80, "/"));
        assert_eq!(Target::parse("http://[::1]:9/").unwrap().host, "::1");
        assert!(Target::parse("ftp://x/").is_err());
        assert!(Target::parse("/just/a/path").is_err());
    }

    #[test]
    fn flags_replace_plan_fields_and_add_headers_and_thresholds() {
        let file = PartialPlan {
            url: Some(Target::parse("http://a/").unwrap()),
            stages: stages(),
            thresholds: vec![Threshold::parse("p95<1s").unwrap()],
            headers: vec![parse_header("x-a: 1").unwrap()],
            timeout: Some(Duration::from_secs(3)),
            ..PartialPlan::default()
        };
        let flags = PartialPlan {
            url: Some(Target::parse("http://b/").unwrap()),
            thresholds: vec![Threshold::parse("errors<1%").unwrap()],
            headers: vec![parse_header("x-b:2").unwrap()],
            ..PartialPlan::default()
        };
        let plan = file
            .overridden_by(flags)
            .complete("test".to_string())
            .unwrap();
        assert_eq!(plan.url.host, "b");
        assert_eq!(plan.thresholds.len(), 2);
        assert_eq!(plan.headers.len(), 2);
        assert_eq!(plan.timeout, Duration::from_secs(3));
        assert_eq!(plan.connections, DEFAULT_HTTP1_CONNECTIONS);
    }

    #[test]
    fn an_incomplete_plan_names_what_is_missing() {
        let problems = PartialPlan::default()
            .complete("test".to_string())
            .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        let h3_over_http = PartialPlan {
            url: Some(Target::parse("http://a/").unwrap()),
            stages: stages(),
            protocol: Some(Protocol::Http3),
            ..PartialPlan::default()
        };
        let problems = h3_over_http.complete("test".to_string()).unwrap_err();
        assert!(
            problems[0].contains("HTTP/3 needs an https"),
            "{problems:?}"
        );
    }

    #[test]
    fn report_files_are_json_or_html() {
        assert!(matches!(
            ReportFile::parse(Path::new("r.json")),
            Ok(ReportFile::Json(_))
        ));
        assert!(matches!(
            ReportFile::parse(Path::new("r.html")),
            Ok(ReportFile::Html(_))
        ));
        assert!(ReportFile::parse(Path::new("r.txt")).is_err());
    }
}
