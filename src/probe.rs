//! `parapet health`: asks a config's admin listener for `/healthz`, so that a container health
//! check works in an image with no shell and no curl (the distroless runtime image).

use crate::config::Config;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

/// Longest wait for connecting, sending and reading the status line, each.
pub const PROBE_TIMEOUT_SECS: u64 = 2;

/// The liveness endpoint asked.
const HEALTH_PATH: &str = "/healthz";

/// Exit 0 when the admin listener answers `/healthz` with 200, 1 when it does not, 2 when the
/// config has no `[admin]` listener. The reason for a failure goes to stderr.
pub fn run(config: &Config) -> ExitCode {
    let Some(admin) = &config.admin else {
        eprintln!(
            "{}: no [admin] listener to ask for {HEALTH_PATH}",
            config.source.display()
        );
        return ExitCode::from(2);
    };
    match probe(dial_address(admin.listen), HEALTH_PATH, &probe_token(admin)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("{HEALTH_PATH} on {}: {reason}", admin.listen);
            ExitCode::FAILURE
        }
    }
}

/// With `protect_metrics`, `/healthz` needs the admin token: read from `token_file`, sent as
/// `Authorization: Bearer`. Empty when none is needed (or the file cannot be read: the answer
/// is then 401, reported as such).
fn probe_token(admin: &crate::config::AdminConfig) -> String {
    let file = admin.token_file.as_ref().filter(|_| admin.protect_metrics);
    file.and_then(|file| std::fs::read_to_string(file).ok())
        .map(|token| token.trim().to_string())
        .unwrap_or_default()
}

/// A wildcard listen address is reached on the loopback address of its family.
fn dial_address(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}

/// One `GET path` over HTTP/1.1; `Ok` when the status is 200.
fn probe(address: SocketAddr, path: &str, token: &str) -> Result<(), String> {
    let timeout = Duration::from_secs(PROBE_TIMEOUT_SECS);
    let mut stream = TcpStream::connect_timeout(&address, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let authorization = match token {
        "" => String::new(),
        token => format!("Authorization: Bearer {token}\r\n"),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\n{authorization}Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let read = stream.read(&mut head).map_err(|e| e.to_string())?;
    let status_line = String::from_utf8_lossy(&head[..read]);
    match status_code(&status_line) {
        Some(200) => Ok(()),
        Some(status) => Err(format!("status {status}")),
        None => Err(format!("not an HTTP answer: {status_line:?}")),
    }
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 200 OK`).
fn status_code(status_line: &str) -> Option<u16> {
    let mut parts = status_line.split_whitespace();
    parts
        .next()
        .filter(|version| version.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_are_dialled_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:9901".parse().expect("literal");
        let v6: SocketAddr = "[::]:9901".parse().expect("literal");
        let specific: SocketAddr = "10.0.0.7:9901".parse().expect("literal");
        assert_eq!(dial_address(v4), "127.0.0.1:9901".parse().expect("literal"));
        assert_eq!(dial_address(v6), "[::1]:9901".parse().expect("literal"));
        assert_eq!(dial_address(specific), specific);
    }

    #[test]
    fn status_codes_are_read_from_http1_status_lines_only() {
        assert_eq!(status_code("HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_code("HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(status_code("SSH-2.0-OpenSSH"), None);
        assert_eq!(status_code(""), None);
    }
}
