//! `parapet demo`: tiny built-in origins on the loopback addresses the config names, so the
//! shipped config answers at once and shows load balancing across them.
//!
//! Each origin speaks just enough HTTP/1.1 for a demo: keep-alive, `GET /health`, and a JSON
//! body naming itself so `curl` shows which origin answered.

use crate::config::Config;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head a demo origin reads.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Loopback server addresses of every upstream: the ones a demo origin can stand in for.
pub fn origin_addresses(config: &Config) -> Vec<SocketAddr> {
    let mut addresses: Vec<SocketAddr> = config
        .upstreams
        .values()
        .flat_map(|u| u.servers.iter().map(|s| s.address))
        .filter(|a| a.ip().is_loopback())
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

/// Binds every address and serves it on a runtime of its own thread.
pub fn start_origins(addresses: Vec<SocketAddr>) -> std::io::Result<()> {
    let listeners = addresses
        .into_iter()
        .map(|address| {
            let listener = std::net::TcpListener::bind(address).map_err(|e| {
                std::io::Error::new(e.kind(), format!("demo origin cannot bind {address}: {e}"))
            })?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let mut origins = tokio::task::JoinSet::new();
            for listener in listeners {
                match TcpListener::from_std(listener) {
                    Ok(listener) => {
                        origins.spawn(serve_origin(listener));
                    }
                    Err(e) => tracing::error!(error = %e, "demo origin failed to start"),
                }
            }
            while origins.join_next().await.is_some() {}
        })
    });
    Ok(())
}

async fn serve_origin(listener: TcpListener) {
    let name = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(origin = %name, "demo origin listening");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_connection(stream, name.clone()));
    }
}

async fn serve_connection(mut stream: TcpStream, name: String) {
    let mut buffer = Vec::with_capacity(1024);
    loop {
        let Some(head_end) = read_head(&mut stream, &mut buffer).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
        buffer.drain(..head_end);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let response = demo_response(&name, &path);
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads until a full request head is buffered; returns its length, or None when the
/// connection is closed or the head is too large.
async fn read_head(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(position) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(position + 4);
        }
        if buffer.len() > MAX_HEAD_BYTES {
            return None;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Items in the larger JSON body the demo serves under `/api/` (big enough to compress).
const DEMO_API_ITEMS: usize = 40;

fn demo_response(name: &str, path: &str) -> String {
    let path = path.replace(['"', '\\'], "");
    let body = if path == "/health" {
        "ok\n".to_string()
    } else if path.starts_with("/api/") {
        let items: Vec<String> = (0..DEMO_API_ITEMS)
            .map(|i| {
                format!("{{\"id\":{i},\"name\":\"item {i}\",\"tags\":[\"demo\",\"parapet\"]}}")
            })
            .collect();
        format!(
            "{{\"origin\":\"{name}\",\"path\":\"{path}\",\"items\":[{}]}}\n",
            items.join(",")
        )
    } else {
        format!("{{\"origin\":\"{name}\",\"path\":\"{path}\"}}\n")
    };
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-demo-origin: {name}\r\n\r\n{body}",
        body.len()
    )
}
