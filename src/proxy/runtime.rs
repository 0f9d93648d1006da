//! What a request needs from the config in force, swapped whole on reload: the routing table
//! with each route's target, the upstream groups, facts about each listener's port, and the
//! cache rules.

use super::metrics::RouteMetrics;
use crate::config::{Config, ServerSettings};
use crate::route::Router;
use crate::upstream::{ServerState, Upstream};
use pingora::proxy::Session;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

/// Where a matched route sends its requests.
pub struct RouteTarget {
    pub name: String,
    /// Responses go through the edge cache.
    pub cache: bool,
    /// `None` when the route has `compress = false` or compression is off.
    pub compression: Option<Arc<crate::compress::CompressionConfig>>,
    pub upstream: Arc<Upstream>,
    pub metrics: RouteMetrics,
}

/// Label values for requests that matched no route.
/// The route and upstream labels of requests answered before a route was found (404s, refusals
/// of unreadable heads).
pub const UNROUTED: &str = "none";
pub static UNROUTED_METRICS: LazyLock<RouteMetrics> =
    LazyLock::new(|| RouteMetrics::new(UNROUTED, UNROUTED));

/// Everything a request needs from the current config.
pub struct Runtime {
    pub settings: ServerSettings,
    pub router: Router<Arc<RouteTarget>>,
    pub upstreams: HashMap<String, Arc<Upstream>>,
    /// What a request can learn from the port it arrived on.
    pub doors: HashMap<u16, DoorFacts>,
    pub cache_rules: Vec<crate::config::CacheRule>,
    /// `[cache] targeted_field` (RFC 9213), consulted before CDN-Cache-Control.
    pub cache_targeted_field: http::HeaderName,
    /// `[cache] stale_if_error` in whole seconds, for responses that name none.
    pub cache_stale_if_error: u32,
}

/// Facts about the listener on one port.
pub struct DoorFacts {
    pub tls: bool,
    /// `Alt-Svc` advertising HTTP/3 on this port, when the listener serves it.
    pub alt_svc: Option<http::HeaderValue>,
}

/// How long clients may remember that HTTP/3 is offered (RFC 7838 `ma`).
const ALT_SVC_MAX_AGE_SECS: u64 = 86_400;

fn door_facts(config: &Config) -> HashMap<u16, DoorFacts> {
    config
        .listeners
        .iter()
        .map(|listener| {
            let port = listener.address.port();
            let alt_svc = listener.h3.then(|| {
                let value = format!("h3=\":{port}\"; ma={ALT_SVC_MAX_AGE_SECS}");
                http::HeaderValue::from_str(&value).expect("digits and ASCII only")
            });
            (
                port,
                DoorFacts {
                    tls: listener.is_tls(),
                    alt_svc,
                },
            )
        })
        .collect()
}

impl Runtime {
    /// Builds the runtime; `previous` lends server state (in-flight counts, health) to servers
    /// that stay.
    pub fn build(config: &Config, previous: Option<&Runtime>) -> Runtime {
        let existing = |upstream: &str, address: SocketAddr| -> Option<Arc<ServerState>> {
            let old = previous?.upstreams.get(upstream)?;
            old.servers.iter().find(|s| s.address == address).cloned()
        };
        let upstreams: HashMap<String, Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|(name, upstream)| {
                let built = Upstream::new(upstream.clone(), |address| existing(name, address));
                (name.clone(), Arc::new(built))
            })
            .collect();
        let router = Router::new(config.routes.iter().filter_map(|route| {
            let upstream = Arc::clone(upstreams.get(&route.upstream)?);
            let target = RouteTarget {
                name: route.name.clone(),
                cache: route.cache,
                compression: (route.compress && config.compression.enabled)
                    .then(|| Arc::new(config.compression.clone())),
                metrics: RouteMetrics::new(&route.name, &route.upstream),
                upstream,
            };
            Some((
                route.host.clone(),
                route.path_prefix.clone(),
                Arc::new(target),
            ))
        }));
        Runtime {
            settings: config.server.clone(),
            router,
            upstreams,
            doors: door_facts(config),
            cache_rules: config.cache.rules.clone(),
            cache_targeted_field: config.cache.targeted_field.clone(),
            cache_stale_if_error: u32::try_from(config.cache.stale_if_error.as_secs())
                .unwrap_or(u32::MAX),
        }
    }

    /// The listener the request came through, by the port it arrived on.
    pub fn door(&self, session: &Session) -> Option<&DoorFacts> {
        let port = session.server_addr()?.as_inet()?.port();
        self.doors.get(&port)
    }
}
