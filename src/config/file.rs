//! The config file as written: raw serde structs. Unknown keys are collected while parsing
//! (`validate.rs` reads them through `serde_ignored`) rather than stopping at the first one;
//! units, addresses and cross-references are checked later too, so every problem in a file is
//! reported in one run.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub listener: Vec<RawListener>,
    #[serde(default)]
    pub upstream: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    pub route: Vec<RawRoute>,
    pub admin: Option<RawAdmin>,
    pub http2: Option<RawHttp2>,
    pub http3: Option<RawHttp3>,
    pub cache: Option<RawCache>,
    pub access_log: Option<RawAccessLog>,
    pub compression: Option<RawCompression>,
}

#[derive(Debug, Deserialize)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub token_file: Option<String>,
    pub protect_metrics: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct RawAccessLog {
    pub target: Option<String>,
    pub buffer: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawServer {
    pub threads: Option<usize>,
    pub grace_period: Option<String>,
    pub max_request_header_size: Option<RawSize>,
    pub max_request_body_size: Option<RawSize>,
    pub max_request_line_size: Option<RawSize>,
    pub header_timeout: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub client_body_timeout: Option<String>,
    pub merge_slashes: Option<bool>,
    pub forward_raw_path: Option<bool>,
    pub upgrade_socket: Option<String>,
    pub server_header: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RawListener {
    pub address: String,
    pub protocols: Option<Vec<String>>,
    pub max_connections: Option<usize>,
    #[serde(default)]
    pub certificate: Vec<RawCertificate>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCache {
    pub max_size: Option<RawSize>,
    pub max_object_size: Option<RawSize>,
    pub lock_timeout: Option<String>,
    pub targeted_field: Option<String>,
    pub stale_if_error: Option<String>,
    #[serde(default)]
    pub rule: Vec<RawCacheRule>,
    pub shared: Option<RawSharedCache>,
}

/// `[cache.shared]`: the second cache tier on Redis.
#[derive(Debug, Deserialize)]
pub struct RawSharedCache {
    pub url: Option<String>,
    pub password_file: Option<String>,
    pub ca_file: Option<String>,
    pub key_prefix: Option<String>,
    pub timeout: Option<String>,
    pub max_object_size: Option<RawSize>,
    pub chunk_size: Option<RawSize>,
    pub pool_size: Option<u32>,
    pub lock_timeout: Option<String>,
    pub breaker_failures: Option<u32>,
    pub breaker_cooldown: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RawCacheRule {
    pub path: String,
    pub ttl: String,
    pub force: Option<bool>,
    pub cache_set_cookie: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct RawCertificate {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawHttp2 {
    pub max_concurrent_streams: Option<u32>,
    pub max_header_list_size: Option<RawSize>,
    pub initial_stream_window: Option<RawSize>,
    pub initial_connection_window: Option<RawSize>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawHttp3 {
    pub max_concurrent_streams: Option<u32>,
    pub max_field_section_size: Option<RawSize>,
    pub stream_receive_window: Option<RawSize>,
    pub receive_window: Option<RawSize>,
    pub idle_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RawUpstream {
    pub balance: Option<String>,
    pub hash_key: Option<String>,
    pub keepalive: Option<usize>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub write_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub retries: Option<usize>,
    pub try_when_all_down: Option<bool>,
    pub host_header: Option<String>,
    #[serde(default)]
    pub server: Vec<RawServerEntry>,
    pub health_check: Option<RawHealthCheck>,
}

#[derive(Debug, Deserialize)]
pub struct RawServerEntry {
    pub address: String,
    pub weight: Option<u32>,
    pub max_fails: Option<u32>,
    pub fail_timeout: Option<String>,
    pub tls: Option<bool>,
    pub sni: Option<String>,
    pub ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RawHealthCheck {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub path: Option<String>,
    pub expect_status: Option<u16>,
    pub host: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub healthy: Option<u32>,
    pub unhealthy: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct RawRoute {
    pub name: Option<String>,
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub upstream: String,
    pub cache: Option<bool>,
    pub compress: Option<bool>,
}

/// `[compression]`. Numbers are `i64` so that a negative or out-of-range value is reported
/// with the other problems rather than stopping the parse.
#[derive(Debug, Default, Deserialize)]
pub struct RawCompression {
    pub enabled: Option<bool>,
    pub algorithms: Option<Vec<String>>,
    pub min_length: Option<RawSize>,
    pub types: Option<Vec<String>>,
    pub gzip_level: Option<i64>,
    pub brotli_level: Option<i64>,
    pub zstd_level: Option<i64>,
    pub max_decompressed_size: Option<RawSize>,
    pub max_ratio: Option<i64>,
}

/// A size written as a number of bytes (`1024`) or as a string with a unit (`"1KiB"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawSize {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl serde::de::Visitor<'_> for SizeVisitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of bytes or a size string such as \"1KiB\"")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(i64::try_from(n).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(text.to_string()))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}
