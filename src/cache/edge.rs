//! The process-wide edge cache: the moka store and pingora's cache lock, made once at start,
//! the gauges refreshed on scrape, and purges, here and (with a shared tier) on every instance.
//!
//! The store and the lock live for the whole process (pingora-cache wants `&'static`);
//! rules and routes come from the runtime config and change on reload. `max_size` and
//! `max_object_size` are read once at start.

use super::metrics;
use super::shared;
use super::store::MokaStorage;
use crate::config::CacheConfig;
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use std::sync::OnceLock;

/// The process-wide cache parts.
pub struct EdgeCache {
    pub storage: &'static MokaStorage,
    pub lock: &'static CacheKeyLockImpl,
    pub max_object_size: usize,
    pub lock_timeout: std::time::Duration,
}

static EDGE_CACHE: OnceLock<EdgeCache> = OnceLock::new();

/// Creates the store and the lock from the config read at start (later calls keep the first).
pub fn init(config: &CacheConfig) -> &'static EdgeCache {
    EDGE_CACHE.get_or_init(|| {
        // Registered at start, so `/metrics` shows the cache families before the first request.
        std::sync::LazyLock::force(&metrics::CACHE_METRICS);
        let max_object_size = usize::try_from(config.max_object_size).unwrap_or(usize::MAX);
        let storage: &'static MokaStorage = Box::leak(Box::new(
            MokaStorage::new(config.max_size, max_object_size).with_fill_wait(config.lock_timeout),
        ));
        let lock: &'static CacheLock = Box::leak(CacheLock::new_boxed(config.lock_timeout));
        if let Some(shared_config) = &config.shared {
            match shared::init(shared_config, purge_local) {
                Ok(tier) => tracing::info!(url = %tier.display_url(), "shared cache tier on"),
                Err(e) => tracing::error!(error = %e, "shared cache tier off"),
            }
        }
        EdgeCache {
            storage,
            lock,
            max_object_size,
            lock_timeout: config.lock_timeout,
        }
    })
}

/// The cache, once `init` ran.
pub fn get() -> Option<&'static EdgeCache> {
    EDGE_CACHE.get()
}

/// Refreshes the size gauges (on scrape).
pub fn refresh_gauges() {
    if let Some(edge) = get() {
        let (bytes, entries) = edge.storage.usage();
        metrics::CACHE_METRICS
            .stored_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        metrics::CACHE_METRICS
            .entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }
}

/// Purges stored URLs: `exact` (every variant of one URL), a `prefix`, or a `glob` (`*`, `?`),
/// here at once and, with a shared tier, in Redis and on every instance within moments.
/// Returns how many entries this instance's L1 dropped.
pub fn purge(exact: Option<&str>, prefix: Option<&str>, glob: Option<&str>) -> usize {
    let request = shared::PurgeRequest {
        url: exact.map(str::to_string),
        prefix: prefix.map(str::to_string),
        glob: glob.map(str::to_string),
    };
    let purged = purge_local(&request);
    if let Some(tier) = shared::get() {
        tier.purge(request);
    }
    purged
}

/// Purges this instance's L1 only (a purge received from another instance).
fn purge_local(request: &shared::PurgeRequest) -> usize {
    let Some(cache) = get() else { return 0 };
    cache.storage.purge_where(|url| request.matches(url))
}
