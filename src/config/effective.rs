//! The config in force as `/config` shows it: every section and key of the file with its
//! default filled in, each named and spelled as the file spells it (`"least_conn"`, `"75s"`,
//! `"64KiB"`), so a value can be copied back into a file. Secrets are never shown: the admin
//! token and the Redis password appear as `"<redacted>"`, credentials in a Redis URL are cut.

use super::units::{format_duration, format_size};
use super::{
    AccessLogTarget, Balance, CacheConfig, Config, HashKey, HealthCheckKind, ListenerConfig,
    ServerSettings, SharedCacheConfig, UpstreamConfig,
};
use crate::compress::CompressionConfig;
use serde_json::{json, Map, Value};

/// What `/config` answers for `config`.
pub fn render(config: &Config) -> Value {
    json!({
        "source": config.source.display().to_string(),
        "server": server(&config.server),
        "admin": config.admin.as_ref().map(|a| json!({
            "listen": a.listen.to_string(),
            "token_file": a.token_file.as_ref().map(|p| p.display().to_string()),
            "token": a.token_file.as_ref().map(|_| REDACTED),
            "protect_metrics": a.protect_metrics,
        })),
        "access_log": {
            "target": match &config.access_log.target {
                AccessLogTarget::Off => "off".to_string(),
                AccessLogTarget::Stdout => "stdout".to_string(),
                AccessLogTarget::File(path) => path.display().to_string(),
            },
            "buffer": config.access_log.buffer,
        },
        "listener": config.listeners.iter().map(listener).collect::<Vec<_>>(),
        "http2": {
            "max_concurrent_streams": config.http2.max_concurrent_streams,
            "max_header_list_size": format_size(config.http2.max_header_list_size.into()),
            "initial_stream_window": format_size(config.http2.initial_stream_window.into()),
            "initial_connection_window": format_size(config.http2.initial_connection_window.into()),
        },
        "http3": {
            "max_concurrent_streams": config.http3.max_concurrent_streams,
            "max_field_section_size": format_size(config.http3.max_field_section_size),
            "stream_receive_window": format_size(config.http3.stream_receive_window.into()),
            "receive_window": format_size(config.http3.receive_window.into()),
            "idle_timeout": format_duration(config.http3.idle_timeout),
        },
        "upstream": config.upstreams.iter()
            .map(|(name, u)| (name.clone(), upstream(u)))
            .collect::<Map<_, _>>(),
        "route": config.routes.iter().map(|r| json!({
            "name": r.name,
            "host": r.host,
            "path_prefix": r.path_prefix,
            "upstream": r.upstream,
            "cache": r.cache,
            "compress": r.compress,
        })).collect::<Vec<_>>(),
        "cache": cache(&config.cache),
        "compression": compression(&config.compression),
    })
}

const REDACTED: &str = "<redacted>";

fn server(s: &ServerSettings) -> Value {
    json!({
        "threads": s.threads,
        "grace_period": format_duration(s.grace_period),
        "max_request_header_size": format_size(s.max_request_header_size as u64),
        "max_request_body_size": format_size(s.max_request_body_size),
        "max_request_line_size": format_size(s.max_request_line_size as u64),
        "header_timeout": format_duration(s.header_timeout),
        "keepalive_timeout": format_duration(s.keepalive_timeout),
        "client_body_timeout": format_duration(s.client_body_timeout),
        "merge_slashes": s.merge_slashes,
        "forward_raw_path": s.forward_raw_path,
        "upgrade_socket": s.upgrade_socket.display().to_string(),
        "server_header": s.server_header.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
    })
}

fn listener(l: &ListenerConfig) -> Value {
    let protocols: Vec<&str> = [
        (l.http1, "http1"),
        (l.h2c, "h2c"),
        (l.h2, "h2"),
        (l.h3, "h3"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    json!({
        "address": l.address.to_string(),
        "protocols": protocols,
        "max_connections": l.max_connections,
        "certificate": l.certificates.iter().map(|c| json!({
            "cert": c.cert.display().to_string(),
            "key": c.key.display().to_string(),
        })).collect::<Vec<_>>(),
    })
}

fn upstream(u: &UpstreamConfig) -> Value {
    let (balance, hash_key) = match &u.balance {
        Balance::LeastConn => ("least_conn", None),
        Balance::RoundRobin => ("round_robin", None),
        Balance::Random => ("random", None),
        Balance::Hash(key) => ("hash", Some(hash_key_name(key))),
    };
    json!({
        "balance": balance,
        "hash_key": hash_key,
        "keepalive": u.keepalive,
        "connect_timeout": format_duration(u.connect_timeout),
        "read_timeout": format_duration(u.read_timeout),
        "write_timeout": format_duration(u.write_timeout),
        "idle_timeout": format_duration(u.idle_timeout),
        "retries": u.retries,
        "try_when_all_down": u.try_when_all_down,
        "host_header": u.host_header.as_ref().and_then(|v| v.to_str().ok()),
        "server": u.servers.iter().map(|s| json!({
            "address": s.host.to_str().unwrap_or_default(),
            "resolved": s.address.to_string(),
            "weight": s.weight,
            "max_fails": s.max_fails,
            "fail_timeout": format_duration(s.fail_timeout),
            "tls": s.tls.is_some(),
            "sni": s.tls.as_ref().map(|t| t.sni.clone()),
            "ca_file": s.tls.as_ref().and_then(|t| t.ca_file.as_ref()).map(|p| p.display().to_string()),
        })).collect::<Vec<_>>(),
        "health_check": u.health_check.as_ref().map(|h| {
            let (kind, path, expect_status, host) = match &h.kind {
                HealthCheckKind::Http { path, expect_status, host } => ("http", Some(path.clone()), Some(*expect_status), host.clone()),
                HealthCheckKind::Tcp => ("tcp", None, None, None),
            };
            json!({
                "type": kind,
                "path": path,
                "expect_status": expect_status,
                "host": host,
                "interval": format_duration(h.interval),
                "timeout": format_duration(h.timeout),
                "healthy": h.healthy,
                "unhealthy": h.unhealthy,
            })
        }),
    })
}

fn hash_key_name(key: &HashKey) -> String {
    match key {
        HashKey::ClientIp => "client_ip".to_string(),
        HashKey::Uri => "uri".to_string(),
        HashKey::Host => "host".to_string(),
        HashKey::Header(name) => format!("header:{name}"),
    }
}

fn cache(c: &CacheConfig) -> Value {
    json!({
        "max_size": format_size(c.max_size),
        "max_object_size": format_size(c.max_object_size),
        "lock_timeout": format_duration(c.lock_timeout),
        "targeted_field": c.targeted_field.as_str(),
        "stale_if_error": format_duration(c.stale_if_error),
        "rule": c.rules.iter().map(|r| json!({
            "path": r.glob,
            "ttl": format_duration(r.ttl),
            "force": r.force,
            "cache_set_cookie": r.cache_set_cookie,
        })).collect::<Vec<_>>(),
        "shared": c.shared.as_ref().map(shared_cache),
    })
}

fn shared_cache(s: &SharedCacheConfig) -> Value {
    json!({
        "url": s.url_without_credentials(),
        "password": s.password.as_ref().map(|_| REDACTED),
        "ca_file": s.ca_file.as_ref().map(|p| p.display().to_string()),
        "key_prefix": s.key_prefix,
        "timeout": format_duration(s.timeout),
        "max_object_size": format_size(s.max_object_size),
        "chunk_size": format_size(s.chunk_size),
        "pool_size": s.pool_size,
        "lock_timeout": format_duration(s.lock_timeout),
        "breaker_failures": s.breaker_failures,
        "breaker_cooldown": format_duration(s.breaker_cooldown),
    })
}

fn compression(c: &CompressionConfig) -> Value {
    json!({
        "enabled": c.enabled,
        "algorithms": c.algorithms.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        "min_length": format_size(c.min_length),
        "types": c.types.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        "gzip_level": c.levels.gzip,
        "brotli_level": c.levels.brotli,
        "zstd_level": c.levels.zstd,
        "max_decompressed_size": format_size(c.bounds.max_decompressed_size),
        "max_ratio": c.bounds.max_ratio,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn render_text(text: &str) -> Value {
        render(&Config::parse(text, Path::new("test.toml")).expect("valid config"))
    }

    const BASE: &str = r#"
[[listener]]
address = "127.0.0.1:8080"
[upstream.app]
balance = "hash"
hash_key = "header:x-user"
[[upstream.app.server]]
address = "localhost:9001"
[[route]]
upstream = "app"
"#;

    #[test]
    fn defaults_are_filled_in_and_spelled_as_the_file_spells_them() {
        let shown = render_text(BASE);
        let app = &shown["upstream"]["app"];
        assert_eq!(app["balance"], "hash");
        assert_eq!(app["hash_key"], "header:x-user");
        assert_eq!(app["server"][0]["address"], "localhost:9001");
        assert_eq!(app["server"][0]["fail_timeout"], "10s");
        assert_eq!(shown["server"]["keepalive_timeout"], "75s");
        assert_eq!(shown["server"]["max_request_header_size"], "64KiB");
        assert_eq!(shown["cache"]["max_size"], "256MiB");
        assert_eq!(shown["cache"]["stale_if_error"], "5m");
        assert_eq!(shown["http2"]["max_concurrent_streams"], 100);
        assert_eq!(shown["http3"]["idle_timeout"], "30s");
        assert_eq!(shown["listener"][0]["protocols"], json!(["http1"]));
        assert_eq!(shown["route"][0]["cache"], false);
    }

    #[test]
    fn redis_credentials_are_never_shown() {
        let text = format!("{BASE}[cache.shared]\nurl = \"rediss://user:hunter2@cache:6380/0\"\n");
        let shown = render_text(&text);
        assert_eq!(shown["cache"]["shared"]["url"], "rediss://cache:6380/0");
        assert!(!shown.to_string().contains("hunter2"));
    }
}
