//! Response compression end to end: negotiation, what is (not) compressed, header rewrites,
//! streaming, origin codings passed through or decoded, and bad compressed bodies from the
//! origin. The scripted origin streams generated bodies chunk by chunk.

use crate::harness::{
    admin_table, client, generated_chunk, h2c_client, reserve_addr, single_upstream_config, Origin,
    Proxy, Script, CLIENT_TIMEOUT, GENERATED_CHUNK_BYTES,
};
use sha2::Digest;
use std::io::{Read, Write};

const CHROME: &str = "gzip, deflate, br, zstd";
const COMPRESSIONS: &str = "parapet_compressions_total";
const DECOMPRESSIONS: &str = "parapet_decompressions_total";
const DECODE_ERRORS: &str = "parapet_decompression_errors_total";

/// A `Content-Length` body of type `content_type`.
fn sized(content_type: &str, body: Vec<u8>) -> Script {
    Script::fixed(body).content_type(content_type)
}

/// A chunked body of type `content_type`.
fn chunked(content_type: &str, body: Vec<u8>) -> Script {
    Script::fixed(body).content_type(content_type).chunked()
}

/// An API-like JSON document of about `len` bytes.
fn json(len: usize) -> Vec<u8> {
    let mut out = String::from("[");
    let mut id = 0;
    while out.len() < len {
        out.push_str(&format!(
            "{{\"id\":{id},\"name\":\"user {}\",\"email\":\"user{}@example.com\",\"active\":{},\"score\":{}}},",
            id * 7 % 1000,
            id * 13 % 977,
            id % 3 == 0,
            id * 31 % 100
        ));
        id += 1;
    }
    out.pop();
    out.push(']');
    out.into_bytes()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

pub(crate) fn compress(coding: &str, data: &[u8]) -> Vec<u8> {
    match coding {
        "gzip" => gzip(data),
        "br" => {
            let mut out = Vec::new();
            let mut writer = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            writer.write_all(data).expect("br");
            drop(writer);
            out
        }
        "zstd" => zstd::stream::encode_all(data, 3).expect("zstd"),
        other => panic!("no encoder for {other}"),
    }
}

/// Decodes a whole body in `coding` with the same crates the proxy uses.
pub(crate) fn decode(coding: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        None => out.extend_from_slice(data),
        Some("gzip") => {
            flate2::read::MultiGzDecoder::new(data)
                .read_to_end(&mut out)
                .expect("a valid gzip body");
        }
        Some("br") => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .expect("a valid br body");
        }
        Some("zstd") => out = zstd::stream::decode_all(data).expect("a valid zstd body"),
        Some(other) => panic!("unexpected Content-Encoding {other}"),
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Proxy and client helpers

struct Setup {
    proxy: Proxy,
    /// The config the proxy started with.
    config: String,
    _origin: Origin,
}

/// A proxy with an admin listener in front of an origin with `replies`; `compression` is the
/// body of a `[compression]` table (empty for the defaults), `route_extra` lines for the route.
async fn setup(replies: Vec<(&str, Script)>, compression: &str, route_extra: &str) -> Setup {
    let origin = Origin::start().await;
    for (path, script) in replies {
        origin.script(path, script);
    }
    let tail = format!(
        "{}\n[compression]\n{compression}\n",
        admin_table(reserve_addr(), None)
    );
    let config = format!(
        "{}{route_extra}\n",
        single_upstream_config(reserve_addr(), "", &[origin.addr()], &tail)
    );
    Setup {
        proxy: Proxy::start(&config).await,
        config,
        _origin: origin,
    }
}

/// One response as the client saw it, body raw (not decoded).
struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("?").to_string())
            .collect()
    }

    fn coding(&self) -> Option<&str> {
        self.header("content-encoding")
    }

    fn decoded(&self) -> Vec<u8> {
        decode(self.coding(), &self.body)
    }
}

async fn fetch_with(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Got, String> {
    let mut request = client.request(method, url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(|e| format!("{e:?}"))?;
    Ok(Got {
        status,
        headers,
        body: body.to_vec(),
    })
}

/// GET `path` with `Accept-Encoding: accept` (none when `None`).
async fn get(proxy: &Proxy, path: &str, accept: Option<&str>) -> Got {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("accept-encoding", a)).into_iter().collect();
    fetch_with(&client(), reqwest::Method::GET, &proxy.url(path), &headers)
        .await
        .unwrap_or_else(|e| panic!("GET {path} ({accept:?}): {e}"))
}

async fn metric(proxy: &Proxy, name: &str, labels: &[(&str, &str)]) -> f64 {
    proxy.metrics().await.value(name, labels)
}

fn kib(n: usize) -> usize {
    n * 1024
}

// ---------------------------------------------------------------------------------------------
// Negotiation and round trips

#[tokio::test]
async fn the_client_weights_pick_the_coding_and_ties_go_to_the_server_order() {
    let body = json(kib(100));
    let s = setup(
        vec![("/api", sized("application/json", body.clone()))],
        "",
        "",
    )
    .await;
    let table: &[(Option<&str>, Option<&str>)] = &[
        (Some(CHROME), Some("br")),
        (Some("gzip;q=1, br;q=0.5"), Some("gzip")),
        (Some("br;q=0"), None),
        (Some("br;q=0, zstd, gzip"), Some("zstd")),
        (Some("*"), Some("br")),
        (Some("gzip;q=0.5, identity"), None),
        (Some("identity;q=0"), None),
        (None, None),
    ];
    for (accept, expected) in table {
        let got = get(&s.proxy, "/api", *accept).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.coding(), *expected, "Accept-Encoding: {accept:?}");
        assert_eq!(got.decoded(), body, "Accept-Encoding: {accept:?}");
        assert_eq!(got.all("vary"), ["Accept-Encoding"], "{accept:?}");
    }
}

#[tokio::test]
async fn the_configured_order_breaks_ties() {
    let body = json(kib(20));
    let s = setup(
        vec![("/api", sized("application/json", body.clone()))],
        "algorithms = [\"gzip\", \"zstd\"]",
        "",
    )
    .await;
    assert_eq!(
        get(&s.proxy, "/api", Some(CHROME)).await.coding(),
        Some("gzip")
    );
    assert_eq!(get(&s.proxy, "/api", Some("br")).await.coding(), None);
    assert_eq!(
        get(&s.proxy, "/api", Some("br, zstd")).await.coding(),
        Some("zstd")
    );
}

#[tokio::test]
async fn every_algorithm_round_trips_to_the_origin_body_and_is_counted_once() {
    let body = json(kib(300));
    let s = setup(
        vec![
            ("/sized", sized("application/json", body.clone())),
            ("/chunked", chunked("application/json", body.clone())),
        ],
        "",
        "",
    )
    .await;
    for coding in ["br", "zstd", "gzip"] {
        for path in ["/sized", "/chunked"] {
            let got = get(&s.proxy, path, Some(coding)).await;
            assert_eq!(got.coding(), Some(coding), "{path}");
            assert!(got.header("content-length").is_none(), "{path} streams");
            assert!(
                got.body.len() < body.len() / 3,
                "{coding} {path} compresses"
            );
            assert_eq!(got.decoded(), body, "{coding} {path}");
        }
        let labels = [("algorithm", coding)];
        assert_eq!(
            metric(&s.proxy, COMPRESSIONS, &labels).await,
            2.0,
            "{coding}"
        );
        let metrics = s.proxy.metrics().await;
        let bytes_in = metrics.value("parapet_compression_bytes_in_total", &labels);
        let bytes_out = metrics.value("parapet_compression_bytes_out_total", &labels);
        assert_eq!(bytes_in, 2.0 * body.len() as f64, "{coding}");
        assert!(bytes_out > 0.0 && bytes_out < bytes_in / 3.0, "{coding}");
        assert!(metrics.value("parapet_compression_seconds_total", &labels) > 0.0);
    }
}

#[tokio::test]
async fn h2c_clients_get_compressed_bodies_too() {
    let body = json(kib(50));
    let s = setup(
        vec![("/api", sized("application/json", body.clone()))],
        "",
        "",
    )
    .await;
    let got = fetch_with(
        &h2c_client(),
        reqwest::Method::GET,
        &s.proxy.url("/api"),
        &[("accept-encoding", "zstd")],
    )
    .await
    .expect("h2c GET");
    assert_eq!(got.coding(), Some("zstd"));
    assert_eq!(got.decoded(), body);
}

// ---------------------------------------------------------------------------------------------
// What is compressed

#[tokio::test]
async fn small_bodies_and_unlisted_types_pass_as_they_are() {
    let small = json(500);
    let png = vec![0x89u8; kib(10)];
    let s = setup(
        vec![
            ("/small", sized("application/json", small.clone())),
            ("/small-chunked", chunked("application/json", small.clone())),
            ("/png", sized("image/png", png.clone())),
            ("/html", sized("Text/HTML; charset=utf-8", json(2000))),
            ("/untyped", Script::fixed(json(2000)).without_content_type()),
        ],
        "min_length = 1024",
        "",
    )
    .await;
    let got = get(&s.proxy, "/small", Some(CHROME)).await;
    assert_eq!((got.coding(), got.body.clone()), (None, small.clone()));
    assert!(
        got.all("vary").is_empty(),
        "nothing varies: {:?}",
        got.all("vary")
    );
    // Unknown length: compressed whatever its size.
    let got = get(&s.proxy, "/small-chunked", Some(CHROME)).await;
    assert_eq!(got.coding(), Some("br"));
    assert_eq!(got.decoded(), small);
    let got = get(&s.proxy, "/png", Some(CHROME)).await;
    assert_eq!((got.coding(), got.body.len()), (None, png.len()));
    assert_eq!(
        get(&s.proxy, "/html", Some(CHROME)).await.coding(),
        Some("br")
    );
    assert_eq!(get(&s.proxy, "/untyped", Some(CHROME)).await.coding(), None);
    assert_eq!(
        metric(&s.proxy, COMPRESSIONS, &[("algorithm", "br")]).await,
        2.0
    );
}

#[tokio::test]
async fn the_types_list_and_min_length_come_from_the_config() {
    let s = setup(
        vec![
            ("/csv", sized("text/csv", json(300))),
            ("/json", sized("application/json", json(300))),
        ],
        "types = [\"text/*\"]\nmin_length = \"200B\"",
        "",
    )
    .await;
    assert_eq!(
        get(&s.proxy, "/csv", Some("gzip")).await.coding(),
        Some("gzip")
    );
    assert_eq!(get(&s.proxy, "/json", Some("gzip")).await.coding(), None);
}

#[tokio::test]
async fn no_transform_responses_are_passed_untouched() {
    let body = json(kib(10));
    let s = setup(
        vec![(
            "/api",
            sized("application/json", body.clone())
                .header("cache-control", "public, no-transform")
                .header("etag", "\"v1\""),
        )],
        "",
        "",
    )
    .await;
    let got = get(&s.proxy, "/api", Some(CHROME)).await;
    assert_eq!(got.coding(), None);
    assert_eq!(got.body, body);
    assert_eq!(got.header("etag"), Some("\"v1\""));
    assert_eq!(
        got.header("content-length"),
        Some(body.len().to_string().as_str())
    );
}

#[tokio::test]
async fn a_route_with_compress_false_is_left_alone() {
    let body = json(kib(10));
    let s = setup(
        vec![("/api", sized("application/json", body.clone()))],
        "",
        "compress = false",
    )
    .await;
    let got = get(&s.proxy, "/api", Some(CHROME)).await;
    assert_eq!((got.coding(), &got.body), (None, &body));
    assert!(got.all("vary").is_empty());
}

#[tokio::test]
async fn a_reload_applies_the_compression_table_and_config_shows_it() {
    let body = json(kib(10));
    let s = setup(
        vec![("/api", sized("application/json", body.clone()))],
        "",
        "",
    )
    .await;
    let (_, shown) = s.proxy.admin_get("/config").await;
    let shown: serde_json::Value = serde_json::from_str(&shown).expect("/config is JSON");
    assert_eq!(
        shown["compression"]["algorithms"],
        serde_json::json!(["br", "zstd", "gzip"])
    );
    assert_eq!(shown["compression"]["min_length"], "1KiB");
    assert_eq!(shown["compression"]["brotli_level"], 3);
    assert_eq!(shown["route"][0]["compress"], true);
    assert_eq!(
        get(&s.proxy, "/api", Some(CHROME)).await.coding(),
        Some("br")
    );

    let off = s
        .config
        .replace("[compression]\n", "[compression]\nenabled = false\n");
    s.proxy.write_config(&off);
    s.proxy.send_signal(libc::SIGHUP);
    let reloaded = [("result", "success")];
    let (metrics, applied) = s
        .proxy
        .metrics_until(|m| m.value("parapet_config_reloads_total", &reloaded) >= 1.0)
        .await;
    assert!(applied, "reload not applied:\n{}", metrics.text);
    let got = get(&s.proxy, "/api", Some(CHROME)).await;
    assert_eq!((got.coding(), &got.body), (None, &body));
    let (_, shown) = s.proxy.admin_get("/config").await;
    let shown: serde_json::Value = serde_json::from_str(&shown).expect("/config is JSON");
    assert_eq!(shown["compression"]["enabled"], false);
}

// ---------------------------------------------------------------------------------------------
// Header rewrites

#[tokio::test]
async fn strong_etags_are_weakened_and_weak_ones_kept() {
    let body = json(kib(4));
    let s = setup(
        vec![
            (
                "/strong",
                sized("application/json", body.clone()).header("etag", "\"abc\""),
            ),
            (
                "/weak",
                sized("application/json", body.clone()).header("etag", "W/\"abc\""),
            ),
        ],
        "",
        "",
    )
    .await;
    assert_eq!(
        get(&s.proxy, "/strong", Some("gzip")).await.header("etag"),
        Some("W/\"abc\"")
    );
    assert_eq!(
        get(&s.proxy, "/weak", Some("gzip")).await.header("etag"),
        Some("W/\"abc\"")
    );
    // Identity served: the bytes are the origin's, the strong validator stays.
    assert_eq!(
        get(&s.proxy, "/strong", None).await.header("etag"),
        Some("\"abc\"")
    );
}

#[tokio::test]
async fn vary_names_accept_encoding_exactly_once() {
    let body = json(kib(4));
    let reply = |vary: Option<&str>| {
        let reply = sized("application/json", body.clone());
        match vary {
            Some(vary) => reply.header("vary", vary),
            None => reply,
        }
    };
    let s = setup(
        vec![
            ("/none", reply(None)),
            ("/origin", reply(Some("Origin"))),
            ("/already", reply(Some("accept-encoding"))),
            ("/star", reply(Some("*"))),
        ],
        "",
        "",
    )
    .await;
    for accept in [Some(CHROME), None] {
        let proxy = &s.proxy;
        let vary = |path| async move { get(proxy, path, accept).await.all("vary") };
        assert_eq!(vary("/none").await, ["Accept-Encoding"], "{accept:?}");
        assert_eq!(
            vary("/origin").await,
            ["Origin, Accept-Encoding"],
            "{accept:?}"
        );
        assert_eq!(vary("/already").await, ["accept-encoding"], "{accept:?}");
        assert_eq!(vary("/star").await, ["*"], "{accept:?}");
    }
}

#[tokio::test]
async fn head_gets_the_headers_a_get_would_and_no_body() {
    let body = json(kib(20));
    let s = setup(
        vec![(
            "/api",
            sized("application/json", body.clone()).header("etag", "\"e\""),
        )],
        "",
        "",
    )
    .await;
    let http = client();
    let head = fetch_with(
        &http,
        reqwest::Method::HEAD,
        &s.proxy.url("/api"),
        &[("accept-encoding", "br")],
    )
    .await
    .expect("HEAD");
    let get = fetch_with(
        &http,
        reqwest::Method::GET,
        &s.proxy.url("/api"),
        &[("accept-encoding", "br")],
    )
    .await
    .expect("GET after HEAD on the same pool");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    for name in ["content-encoding", "vary", "etag", "content-type"] {
        assert_eq!(head.all(name), get.all(name), "{name}");
    }
    assert!(head.header("content-length").is_none());
    assert_eq!(get.decoded(), body);
    assert_eq!(
        metric(&s.proxy, COMPRESSIONS, &[("algorithm", "br")]).await,
        1.0
    );
}

#[tokio::test]
async fn partial_and_not_modified_answers_are_untouched() {
    let part = json(2000);
    let s = setup(
        vec![
            (
                "/partial",
                sized("application/json", part.clone())
                    .status(206)
                    .header("content-range", "bytes 0-1999/90000")
                    .header("etag", "\"p\""),
            ),
            (
                "/unchanged",
                sized("application/json", Vec::new())
                    .status(304)
                    .header("etag", "\"p\""),
            ),
        ],
        "",
        "",
    )
    .await;
    let got = get(&s.proxy, "/partial", Some(CHROME)).await;
    assert_eq!(got.status, 206);
    assert_eq!((got.coding(), got.body.clone()), (None, part));
    assert_eq!(got.header("etag"), Some("\"p\""));
    assert!(got.all("vary").is_empty());
    let got = get(&s.proxy, "/unchanged", Some(CHROME)).await;
    assert_eq!(got.status, 304);
    assert_eq!(got.coding(), None);
    assert_eq!(got.header("etag"), Some("\"p\""));
    assert_eq!(
        metric(&s.proxy, COMPRESSIONS, &[("algorithm", "br")]).await,
        0.0
    );
}

// ---------------------------------------------------------------------------------------------
// Streaming

/// Resident and peak resident memory of a process, in bytes.
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Most the proxy's peak memory may grow while streaming a 20 MiB body through a compressor
/// (measured: about 2.5 MiB). The body is hex text that compresses to about half, so a proxy
/// holding the body, or even just its compressed form, would go past it.
const STREAM_GROWTH_BOUND_BYTES: u64 = 8 << 20;

#[tokio::test]
async fn a_20_mib_body_streams_through_the_compressor_in_bounded_memory() {
    const MIB_CHUNKS: usize = 1024 * 1024 / GENERATED_CHUNK_BYTES;
    let s = setup(
        vec![
            (
                "/20MiB",
                Script::generated(20 * MIB_CHUNKS).content_type("text/plain"),
            ),
            (
                "/4MiB",
                Script::generated(4 * MIB_CHUNKS).content_type("text/plain"),
            ),
            ("/warm", Script::generated(16).content_type("text/plain")),
        ],
        "",
        "",
    )
    .await;
    for coding in ["br", "zstd", "gzip"] {
        get(&s.proxy, "/warm", Some(coding)).await;
    }
    let (_, peak_before) = memory_of(s.proxy.pid());
    // Brotli, pure Rust, is slow in a debug build: it streams less.
    for (coding, path, chunks) in [
        ("zstd", "/20MiB", 20 * MIB_CHUNKS),
        ("gzip", "/20MiB", 20 * MIB_CHUNKS),
        ("br", "/4MiB", 4 * MIB_CHUNKS),
    ] {
        let mut response = client()
            .get(s.proxy.url(path))
            .header("accept-encoding", coding)
            .timeout(CLIENT_TIMEOUT * 4)
            .send()
            .await
            .expect("GET a big body");
        let content_encoding = response.headers().get("content-encoding").cloned();
        assert_eq!(
            content_encoding.as_ref().map(|v| v.as_bytes()),
            Some(coding.as_bytes())
        );
        let mut compressed = Vec::new();
        while let Some(piece) = response.chunk().await.expect("body piece") {
            compressed.extend_from_slice(&piece);
        }
        let decoded = decode(Some(coding), &compressed);
        let mut expected = sha2::Sha256::new();
        (0..chunks).for_each(|i| expected.update(generated_chunk(i)));
        assert_eq!(decoded.len(), chunks * GENERATED_CHUNK_BYTES, "{coding}");
        assert!(
            sha2::Sha256::digest(&decoded) == expected.finalize(),
            "{coding}: same bytes"
        );
    }
    let (_, peak_after) = memory_of(s.proxy.pid());
    let growth = peak_after.saturating_sub(peak_before);
    eprintln!(
        "proxy peak memory grew by {} KiB while streaming",
        growth / 1024
    );
    assert!(
        growth < STREAM_GROWTH_BOUND_BYTES,
        "peak memory grew by {growth} bytes"
    );
}

// ---------------------------------------------------------------------------------------------
// Origin codings

#[tokio::test]
async fn an_origin_coding_the_client_accepts_passes_through_byte_for_byte() {
    let body = json(kib(64));
    let gzipped = gzip(&body);
    let s = setup(
        vec![(
            "/gz",
            sized("application/json", gzipped.clone())
                .header("content-encoding", "gzip")
                .header("etag", "\"g\""),
        )],
        "",
        "",
    )
    .await;
    for accept in [CHROME, "gzip", "*"] {
        let got = get(&s.proxy, "/gz", Some(accept)).await;
        assert_eq!(got.coding(), Some("gzip"), "{accept}");
        assert_eq!(
            got.body, gzipped,
            "{accept}: the origin's bytes, not re-encoded"
        );
        assert_eq!(got.header("etag"), Some("\"g\""), "{accept}");
        assert_eq!(got.all("vary"), ["Accept-Encoding"], "{accept}");
    }
    let metrics = s.proxy.metrics().await;
    for algorithm in ["br", "zstd", "gzip"] {
        assert_eq!(
            metrics.value(COMPRESSIONS, &[("algorithm", algorithm)]),
            0.0
        );
        assert_eq!(
            metrics.value(DECOMPRESSIONS, &[("algorithm", algorithm)]),
            0.0
        );
    }
}

#[tokio::test]
async fn an_origin_coding_the_client_does_not_accept_is_decoded() {
    let body = json(kib(200));
    let replies: Vec<(String, Script)> = ["gzip", "br", "zstd"]
        .iter()
        .map(|coding| {
            (
                format!("/{coding}"),
                chunked("application/json", compress(coding, &body))
                    .header("content-encoding", coding)
                    .header("etag", "\"o\""),
            )
        })
        .collect();
    let s = setup(
        replies
            .iter()
            .map(|(p, r)| (p.as_str(), r.clone()))
            .collect(),
        "",
        "",
    )
    .await;
    for coding in ["gzip", "br", "zstd"] {
        let path = format!("/{coding}");
        for accept in [None, Some("identity"), Some("deflate")] {
            let got = get(&s.proxy, &path, accept).await;
            assert_eq!(got.coding(), None, "{coding} for {accept:?}");
            assert_eq!(got.body, body, "{coding} for {accept:?}");
            assert_eq!(got.header("etag"), Some("W/\"o\""));
            assert_eq!(got.all("vary"), ["Accept-Encoding"]);
        }
        let labels = [("algorithm", coding)];
        assert_eq!(
            metric(&s.proxy, DECOMPRESSIONS, &labels).await,
            3.0,
            "{coding}"
        );
        assert_eq!(
            metric(&s.proxy, COMPRESSIONS, &labels).await,
            0.0,
            "{coding}"
        );
    }
}

/// Reads a response that should be cut: the body must end in an error, not look complete.
async fn expect_cut(proxy: &Proxy, path: &str) {
    let response = client().get(proxy.url(path)).send().await;
    match response {
        // The header may already be on its way when the body turns out bad...
        Ok(response) if response.status() == 200 => {
            let body = response.bytes().await;
            assert!(
                body.is_err(),
                "{path}: a cut body must not end cleanly, got {:?} bytes",
                body.map(|b| b.len())
            );
        }
        // ...or not yet, and then the client gets 502: the upstream's answer was bad.
        Ok(response) => assert_eq!(response.status(), 502, "{path}"),
        Err(_) => {}
    }
}

#[tokio::test]
async fn a_decompression_bomb_is_cut_at_the_bound_and_counted() {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(9));
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        encoder.write_all(&zeros).expect("bomb");
    }
    let bomb = encoder.finish().expect("bomb");
    assert!(
        bomb.len() < 100 * 1024,
        "64 MiB of zeros in {} bytes",
        bomb.len()
    );
    let s = setup(
        vec![
            (
                "/bomb",
                chunked("text/plain", bomb).header("content-encoding", "gzip"),
            ),
            ("/ok", sized("text/plain", b"still here".to_vec())),
        ],
        "max_ratio = 100",
        "",
    )
    .await;
    expect_cut(&s.proxy, "/bomb").await;
    let labels = [("algorithm", "gzip"), ("reason", "over_bound")];
    let (_, counted) = s
        .proxy
        .metrics_until(|m| m.value(DECODE_ERRORS, &labels) >= 1.0)
        .await;
    assert!(counted, "the bomb is counted in {DECODE_ERRORS}");
    let got = get(&s.proxy, "/ok", None).await;
    assert_eq!(got.body, b"still here", "the proxy is alive");
}

#[tokio::test]
async fn a_body_over_max_decompressed_size_is_cut() {
    let body = json(kib(1500));
    let s = setup(
        vec![(
            "/big",
            chunked("application/json", compress("zstd", &body)).header("content-encoding", "zstd"),
        )],
        "max_decompressed_size = \"1MiB\"",
        "",
    )
    .await;
    expect_cut(&s.proxy, "/big").await;
    let labels = [("algorithm", "zstd"), ("reason", "over_bound")];
    let (_, counted) = s
        .proxy
        .metrics_until(|m| m.value(DECODE_ERRORS, &labels) >= 1.0)
        .await;
    assert!(counted);
}

#[tokio::test]
async fn a_corrupt_origin_body_is_cut_cleanly_and_counted() {
    let body = json(kib(100));
    let mut corrupt = gzip(&body);
    let middle = corrupt.len() / 2;
    corrupt.truncate(middle);
    corrupt.extend_from_slice(&[0xff; 4096]);
    let mut truncated = compress("br", &body);
    truncated.truncate(truncated.len() / 2);
    let s = setup(
        vec![
            (
                "/corrupt",
                chunked("application/json", corrupt).header("content-encoding", "gzip"),
            ),
            (
                "/truncated",
                sized("application/json", truncated).header("content-encoding", "br"),
            ),
            (
                "/garbage",
                sized("application/json", vec![0x42; 5000]).header("content-encoding", "zstd"),
            ),
            ("/ok", sized("text/plain", b"still here".to_vec())),
        ],
        "",
        "",
    )
    .await;
    for (path, algorithm) in [
        ("/corrupt", "gzip"),
        ("/truncated", "br"),
        ("/garbage", "zstd"),
    ] {
        expect_cut(&s.proxy, path).await;
        let labels = [("algorithm", algorithm), ("reason", "corrupt")];
        let (_, counted) = s
            .proxy
            .metrics_until(|m| m.value(DECODE_ERRORS, &labels) >= 1.0)
            .await;
        assert!(counted, "{path} is counted");
    }
    assert_eq!(get(&s.proxy, "/ok", None).await.body, b"still here");
    // A client that accepts the coding gets the origin's bytes as they are: not ours to judge.
    let got = get(&s.proxy, "/garbage", Some("zstd")).await;
    assert_eq!(got.body, vec![0x42; 5000]);
}

#[tokio::test]
async fn a_body_that_goes_bad_after_the_header_left_is_cut_not_completed() {
    let body = json(kib(200));
    let compressed = gzip(&body);
    let (good, _) = compressed.split_at(compressed.len() / 2);
    let s = setup(
        vec![(
            "/late",
            Script::two_parts(good.to_vec(), vec![0xff; 4096])
                .content_type("application/json")
                .header("content-encoding", "gzip"),
        )],
        "",
        "",
    )
    .await;
    let response = client()
        .get(s.proxy.url("/late"))
        .send()
        .await
        .expect("header");
    assert_eq!(response.status(), 200);
    let body = response.bytes().await;
    assert!(
        body.is_err(),
        "the body ends in an error, not cleanly: {body:?}"
    );
    let labels = [("algorithm", "gzip"), ("reason", "corrupt")];
    let (_, counted) = s
        .proxy
        .metrics_until(|m| m.value(DECODE_ERRORS, &labels) >= 1.0)
        .await;
    assert!(counted);
    assert!(
        s.proxy
            .wait_for_log_lines(&["decoding the upstream's gzip body", "/late"], 1)
            .await,
        "the error is logged with the request"
    );
}

// ---------------------------------------------------------------------------------------------
// With the edge cache

#[tokio::test]
async fn a_cached_variant_is_served_again_without_compressing_again() {
    let body = json(kib(100));
    let cacheable =
        sized("application/json", body.clone()).header("cache-control", "public, max-age=60");
    let s = setup(
        vec![("/api", cacheable.clone()), ("/head-first", cacheable)],
        "",
        "cache = true",
    )
    .await;
    // A HEAD miss is filled with a GET upstream: what is stored must be the compressed body
    // its headers announce.
    let head = fetch_with(
        &client(),
        reqwest::Method::HEAD,
        &s.proxy.url("/head-first"),
        &[("accept-encoding", "zstd")],
    )
    .await
    .expect("HEAD");
    assert_eq!((head.coding(), head.body.len()), (Some("zstd"), 0));
    let zstd = [("algorithm", "zstd")];
    let got = get(&s.proxy, "/head-first", Some("zstd")).await;
    assert_eq!(got.coding(), Some("zstd"));
    assert_eq!(got.decoded(), body);
    let compressed = metric(&s.proxy, COMPRESSIONS, &zstd).await;
    let again = get(&s.proxy, "/head-first", Some("zstd")).await;
    assert_eq!(
        (again.coding(), again.decoded()),
        (Some("zstd"), body.clone())
    );
    assert_eq!(metric(&s.proxy, COMPRESSIONS, &zstd).await, compressed);
    for coding in ["br", "gzip"] {
        let first = get(&s.proxy, "/api", Some(coding)).await;
        let again = get(&s.proxy, "/api", Some(coding)).await;
        assert_eq!(first.coding(), Some(coding));
        assert_eq!(again.coding(), Some(coding));
        assert_eq!(again.body, first.body, "{coding}: the stored variant");
        assert_eq!(again.decoded(), body);
        let labels = [("algorithm", coding)];
        assert_eq!(
            metric(&s.proxy, COMPRESSIONS, &labels).await,
            1.0,
            "{coding}"
        );
    }
    let identity = get(&s.proxy, "/api", None).await;
    assert_eq!((identity.coding(), &identity.body), (None, &body));
}
