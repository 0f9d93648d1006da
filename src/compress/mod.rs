//! Response compression: `Accept-Encoding` negotiation, which responses are compressed or
//! decoded, streaming encoders and bounded decoders, and the Pingora upstream module that runs
//! them.
//!
//! Lifecycle of one response:
//! 1. `request_filter`: once the route is known, [`RequestCompression::new`] parses the
//!    request's `Accept-Encoding` and negotiates the coding an identity body would get
//!    ([`negotiate`]); it lives in the request's `Ctx`.
//! 2. `adjust_upstream_modules`: [`RequestCompression::arm`] hands that plan to this request's
//!    [`CompressionModule`], an *upstream* module: Pingora runs it on the upstream response
//!    before `upstream_response_filter` and before the cache. A response the cache will store
//!    is left as the origin sent it: the cache keeps the origin's representation once and
//!    derives every other coding from it ([`derive`]), once per coding, and a hit is never
//!    compressed again.
//! 3. The module's header filter decides ([`policy::decide`]): compress, decode an origin
//!    coding the client does not accept, add `Vary` only, or leave the response alone; and
//!    rewrites the header ([`policy::apply`]).
//! 4. Its body filter streams each piece through the encoder or decoder; the end of the body
//!    (the last piece, or the trailers or end-of-response task of an HTTP/2 upstream) flushes
//!    the encoder's tail. A corrupt or over-bound body being decoded fails the request: the
//!    client's response is cut, never completed with wrong bytes, and the error is counted in
//!    `parapet_decompression_errors_total`.

pub mod decoder;
pub mod derive;
pub mod encoder;
pub mod metrics;
mod module;
pub mod negotiate;
pub mod policy;

pub use decoder::{Bounds, DecodeError};
pub use encoder::Levels;
pub use module::{CompressionModule, CompressionModuleBuilder};
pub use negotiate::{negotiate, AcceptEncoding, Algorithm, Encoding};
pub use policy::TypePattern;

use pingora::http::RequestHeader;
use pingora::modules::http::ModuleBuilder;
use pingora::proxy::Session;
use std::sync::Arc;

/// The builder to register in `init_upstream_modules` (once, at startup); it also registers
/// the compression metrics, so they are exported before the first compressed response.
pub fn upstream_module() -> ModuleBuilder {
    std::sync::LazyLock::force(&metrics::COMPRESSION);
    Box::new(CompressionModuleBuilder)
}

/// Default `min_length`: smaller bodies gain too little to pay for the CPU and headers.
pub const DEFAULT_MIN_LENGTH_BYTES: u64 = 1024;
/// Default levels, measured on a 100 KiB JSON body flushed in 64 KiB pieces (size, encoder
/// time on one core): gzip 2 (26.5%, 0.32 ms; zlib-ng's level 1 is a static-Huffman mode at
/// 35.9%), brotli 3 (23.9%, 0.77 ms: the CPU of levels 1 and 2, smaller, and robust to small
/// flushed pieces), zstd 1 (23.9%, 0.16 ms; level 3 gains 0.7% for 1.5x the CPU). Proxy CPU
/// per request, against nginx: `benches/compression_cpu.py`.
pub const DEFAULT_LEVELS: Levels = Levels {
    gzip: 2,
    brotli: 3,
    zstd: 1,
};
/// Default `max_decompressed_size`.
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: u64 = 1 << 30;
/// Default `max_ratio`.
pub const DEFAULT_MAX_RATIO: u64 = 100;
/// Default `types`: text formats and the structured text types that compress well.
pub const DEFAULT_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/xml",
    "application/*+xml",
    "application/wasm",
    "application/manifest+json",
    "application/x-ndjson",
    "image/svg+xml",
    "image/x-icon",
    "font/ttf",
    "font/otf",
];

/// The validated `[compression]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionConfig {
    /// Off: responses pass untouched everywhere (default true).
    pub enabled: bool,
    /// Server preference where the client's weights tie (default br, zstd, gzip).
    pub algorithms: Vec<Algorithm>,
    /// Bodies with a known length below this stay identity (default 1024).
    pub min_length: u64,
    /// Media types that are compressed (default [`DEFAULT_TYPES`]).
    pub types: Vec<TypePattern>,
    pub levels: Levels,
    /// Limits on decoding an origin's coding for a client that does not accept it.
    pub bounds: Bounds,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            enabled: true,
            algorithms: Algorithm::ALL.to_vec(),
            min_length: DEFAULT_MIN_LENGTH_BYTES,
            types: DEFAULT_TYPES
                .iter()
                .map(|t| TypePattern::parse(t).expect("default types are valid"))
                .collect(),
            levels: DEFAULT_LEVELS,
            bounds: Bounds {
                max_decompressed_size: DEFAULT_MAX_DECOMPRESSED_BYTES,
                max_ratio: DEFAULT_MAX_RATIO,
            },
        }
    }
}

/// One request's compression plan, kept in its `Ctx`: empty when compression is off for the
/// route (or globally), else the parsed `Accept-Encoding` and the negotiated coding.
#[derive(Debug, Clone, Default)]
pub struct RequestCompression {
    plan: Option<Plan>,
}

#[derive(Debug, Clone)]
struct Plan {
    config: Arc<CompressionConfig>,
    accept: AcceptEncoding,
    preferred: Encoding,
    /// The client asked with HEAD: a body-less upstream answer gets the header edits a GET
    /// would.
    head: bool,
}

impl RequestCompression {
    /// The plan for `req` on a route whose compression settings are `config` (`None`: the
    /// route has `compress = false` or `[compression] enabled = false`).
    pub fn new(config: Option<&Arc<CompressionConfig>>, req: &RequestHeader) -> Self {
        let plan = config.filter(|c| c.enabled).map(|config| {
            let accept = AcceptEncoding::from_headers(&req.headers);
            // A client asking for no transformation gets the origin's body: an identity body
            // stays identity (an origin coding it does not accept is still decoded).
            let preferred = if policy::request_forbids_transform(&req.headers) {
                Encoding::Identity
            } else {
                accept.preferred(&config.algorithms)
            };
            Plan {
                preferred,
                accept,
                head: req.method == http::Method::HEAD,
                config: Arc::clone(config),
            }
        });
        RequestCompression { plan }
    }

    /// The coding an identity body of a compressible type gets for this request; `None` when
    /// compression is off for its route.
    pub fn encoding(&self) -> Option<Encoding> {
        self.plan.as_ref().map(|p| p.preferred)
    }

    /// The route's compression settings; `None` when compression is off for it.
    pub fn config(&self) -> Option<&Arc<CompressionConfig>> {
        self.plan.as_ref().map(|p| &p.config)
    }

    /// Hands the plan to this request's upstream [`CompressionModule`]; call it from
    /// `adjust_upstream_modules`, before the module sees the response header. When the cache
    /// stores the response (`stored_by_cache`) the module leaves it alone: the cache derives
    /// the coding this request gets from the stored copy.
    pub fn arm(&self, session: &mut Session, stored_by_cache: bool) {
        if let Some(module) = session.upstream_modules_ctx.get_mut::<CompressionModule>() {
            module.arm(self.plan.clone().filter(|_| !stored_by_cache));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, accept_encoding: Option<&str>) -> RequestHeader {
        let mut req = RequestHeader::build(method, b"/", None).expect("request");
        if let Some(value) = accept_encoding {
            req.insert_header("accept-encoding", value).expect("header");
        }
        req
    }

    #[test]
    fn a_route_without_compression_has_no_plan() {
        let req = request("GET", Some("br"));
        assert_eq!(RequestCompression::new(None, &req).encoding(), None);
        let off = Arc::new(CompressionConfig {
            enabled: false,
            ..CompressionConfig::default()
        });
        assert_eq!(RequestCompression::new(Some(&off), &req).encoding(), None);
        assert!(RequestCompression::new(Some(&off), &req).config().is_none());
    }

    #[test]
    fn a_request_with_no_transform_is_not_compressed() {
        let config = Arc::new(CompressionConfig::default());
        let mut req = request("GET", Some("br"));
        req.insert_header("cache-control", "max-age=0, no-transform")
            .expect("header");
        let plan = RequestCompression::new(Some(&config), &req);
        assert_eq!(plan.encoding(), Some(Encoding::Identity));
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let config = CompressionConfig::default();
        assert!(config.enabled);
        assert_eq!(
            config.algorithms,
            [Algorithm::Br, Algorithm::Zstd, Algorithm::Gzip]
        );
        assert_eq!(config.min_length, 1024);
        assert_eq!(config.types.len(), DEFAULT_TYPES.len());
    }
}
