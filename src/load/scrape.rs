//! Reading Parapet's `/metrics`: fetching the page from the admin listener and parsing the
//! Prometheus text format into samples.

use super::plan::Target;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// Longest wait for one scrape; a scrape that takes longer is skipped, not waited for.
const SCRAPE_TIMEOUT_SECS: u64 = 2;

/// One sample: a metric name, its labels, its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The `/metrics` URL of an admin listener given as `http://HOST:PORT` (a path, if any, is kept
/// when it already ends in `/metrics`).
pub fn metrics_path(admin: &Target) -> String {
    match admin.path_and_query.ends_with("/metrics") {
        true => admin.path_and_query.clone(),
        false => format!("{}/metrics", admin.path_and_query.trim_end_matches('/')),
    }
}

/// GETs the admin listener's `/metrics` over a fresh HTTP/1.1 connection.
pub async fn fetch(admin: &Target) -> Result<String, String> {
    let fetch = fetch_once(admin);
    tokio::time::timeout(Duration::from_secs(SCRAPE_TIMEOUT_SECS), fetch)
        .await
        .map_err(|_| format!("no answer within {SCRAPE_TIMEOUT_SECS}s"))?
}

async fn fetch_once(admin: &Target) -> Result<String, String> {
    if admin.https {
        return Err("the admin listener speaks plain http".to_string());
    }
    let stream = tokio::net::TcpStream::connect((admin.host.as_str(), admin.port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = http::Request::get(metrics_path(admin))
        .header(http::header::HOST, admin.authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("GET {} answered {status}", metrics_path(admin)));
    }
    String::from_utf8(body.to_vec()).map_err(|_| "the metrics page is not UTF-8".to_string())
}

/// Parses the text exposition format, keeping only samples whose name starts with `prefix`.
/// Lines that do not parse are skipped: a scrape is evidence, not input to validate.
pub fn parse(text: &str, prefix: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let (labels, rest) = match line[name_end..].strip_prefix('{') {
        Some(after_brace) => parse_labels(after_brace)?,
        None => (Vec::new(), &line[name_end..]),
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        number => number.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `key="value",…}` → the labels and what follows the closing brace.
fn parse_labels(mut text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        if let Some(rest) = text.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, after_key) = text.split_once("=\"")?;
        let (value, rest) = quoted_value(after_key)?;
        labels.push((key.trim().to_string(), value));
        text = rest;
    }
}

/// Reads an escaped label value up to its closing quote.
fn quoted_value(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[at + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                escaped => value.push(escaped),
            },
            other => value.push(other),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_keep_names_labels_and_values() {
        let text = "# HELP parapet_x a help\n\
            parapet_x_bucket{route=\"a \\\"b\\\"\",le=\"0.5\"} 3\n\
            parapet_x_bucket{route=\"a\",le=\"+Inf\"} 4\n\
            parapet_y 2.5\n\
            other_z 1\n";
        let samples = parse(text, "parapet_");
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].name, "parapet_x_bucket");
        assert_eq!(samples[0].label("route"), Some("a \"b\""));
        assert_eq!(samples[0].label("le"), Some("0.5"));
        assert_eq!(samples[0].value, 3.0);
        assert_eq!(samples[2].labels, vec![]);
        assert_eq!(samples[2].value, 2.5);
    }

    #[test]
    fn the_metrics_path_is_added_to_a_bare_admin_url() {
        let bare = Target::parse("http://127.0.0.1:9901").unwrap();
        assert_eq!(metrics_path(&bare), "/metrics");
        let full = Target::parse("http://127.0.0.1:9901/metrics").unwrap();
        assert_eq!(metrics_path(&full), "/metrics");
    }
}
