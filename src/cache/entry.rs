//! One stored response, as the store keeps it and a second tier copies it: its URL and key,
//! pingora-cache's serialized meta (parsed once, by its first hit), the origin's body, the
//! codings derived from it (`variants`), and the weight all that has in the store.

use super::variants::Variants;
use crate::compress::derive::Derivable;
use bytes::Bytes;
use pingora::cache::CacheMeta;
use pingora::Result;
use std::sync::{Arc, OnceLock};

/// Memory an entry takes besides its data: its own allocations, the allocator's rounding and
/// moka's per-entry bookkeeping, measured. Counted in the weight so that `max_size` bounds
/// memory rather than payload. `memory_check` in tests/it/cache.rs (100,000 keys of 4 KiB through
/// a 128 MiB cache, debug build, mimalloc) measured 5,870 bytes of RSS per entry, 750 more than
/// its weight with 768 here (RSS 191.1 MiB, 0.9 MiB under max_size + 64 MiB); hence 1,536.
const ENTRY_OVERHEAD_BYTES: usize = 1536;
/// Memory of the parsed meta an entry keeps once it has been hit: the same memory check with
/// every entry's meta parsed measured 7,669 bytes of RSS per entry against 5,960 without.
pub(super) const PARSED_META_BYTES: usize = 2048;

/// Serialized meta: (internal, header), as pingora-cache's `CacheMeta::serialize` gives it.
pub type MetaBytes = (Vec<u8>, Vec<u8>);

/// One stored response, the unit a second cache tier (issue 15) serializes: `url` (for purges),
/// `meta` (pingora-cache's serialized `CacheMeta`: status and header fields, fresh-until,
/// created and updated times, the epoch that carries its Age, stale windows, variance), `body`
/// (the origin's representation) and `variants` (the codings derived from `body`).
pub struct Entry {
    /// `scheme://host:port/path?query`, for purges by URL, prefix or glob.
    pub url: String,
    /// The moka key (the cache key's combined hash).
    key: String,
    meta: MetaBytes,
    /// `meta` parsed by the first hit, so later hits clone it instead of deserializing (that
    /// was a quarter of a cache hit's instructions, benches/README.md). Entries never hit do
    /// not pay its memory.
    parsed: OnceLock<CacheMeta>,
    body: Bytes,
    /// What the stored representation allows, decided by the first request that asks.
    derivable: OnceLock<Derivable>,
    variants: Arc<Variants>,
}

impl Entry {
    pub fn new(
        url: String,
        key: String,
        meta: MetaBytes,
        body: Bytes,
        derivable: Option<Derivable>,
        variants: Variants,
    ) -> Entry {
        let cell = OnceLock::new();
        if let Some(derivable) = derivable {
            let _ = cell.set(derivable);
        }
        Entry {
            url,
            key,
            meta,
            parsed: OnceLock::new(),
            body,
            derivable: cell,
            variants: Arc::new(variants),
        }
    }

    /// The meta a hit starts from, and whether this call parsed it (the entry weighs more from
    /// now on).
    pub fn hit_meta(&self) -> Result<(CacheMeta, bool)> {
        if let Some(meta) = self.parsed.get() {
            return Ok((meta.clone(), false));
        }
        let meta = CacheMeta::deserialize(&self.meta.0, &self.meta.1)?;
        let kept_now = self.parsed.set(meta.clone()).is_ok();
        Ok((meta, kept_now))
    }

    /// Bytes it takes in the store (moka's weight): its data and its bookkeeping.
    pub fn weight(&self) -> u32 {
        let bytes = ENTRY_OVERHEAD_BYTES
            + self.body.len()
            + self.variants.bytes()
            + self.meta.0.len()
            + self.meta.1.len()
            + self.key.len()
            + self.url.len()
            + self.parsed.get().map_or(0, |_| PARSED_META_BYTES);
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }

    /// The moka key (the cache key's combined hash).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The serialized meta: (internal, header).
    pub fn meta(&self) -> &MetaBytes {
        &self.meta
    }

    pub fn body(&self) -> &Bytes {
        &self.body
    }

    pub fn variants(&self) -> &Variants {
        &self.variants
    }

    /// What the stored representation allows, decided once (`decide` runs for the first
    /// request that asks).
    pub fn derivable(&self, decide: impl FnOnce() -> Derivable) -> Derivable {
        *self.derivable.get_or_init(decide)
    }

    /// The same response under the meta of a revalidation: the same body, so the same
    /// variants, which follow its new freshness.
    pub fn with_meta(&self, meta: &CacheMeta) -> Result<Entry> {
        Ok(Entry {
            url: self.url.clone(),
            key: self.key.clone(),
            meta: meta.serialize()?,
            parsed: OnceLock::from(meta.clone()),
            body: self.body.clone(),
            derivable: self.derivable.clone(),
            variants: Arc::clone(&self.variants),
        })
    }
}
