//! What passes between this instance's store (L1) and the shared tier: a complete entry
//! written to Redis, an entry read from Redis made an L1 entry, and a fill claim given back
//! when the fill was not stored. Derived codings never pass: each instance derives its own
//! from the stored representation.

use super::entry::{ttl, SharedEntry};
use crate::cache::entry::Entry;
use crate::cache::variants::Variants;
use pingora::cache::CacheMeta;
use std::time::SystemTime;

/// Writes a complete entry to the shared tier, when there is one (returns at once).
pub fn share(entry: &Entry, meta: &CacheMeta) {
    if let Some(tier) = super::get() {
        let shared = SharedEntry {
            meta: entry.meta().clone(),
            body: entry.body().clone(),
        };
        let ttl = ttl(meta, SystemTime::now());
        tier.store(&entry.url, entry.key(), shared, ttl);
    }
}

/// Gives up this instance's claim on filling `hash` in the shared tier (the fill was not
/// stored).
pub fn release_claim(hash: &str) {
    if let Some(tier) = super::get() {
        tier.release(hash);
    }
}

/// The L1 entry for `url` (moka key `hash`) made of one read from the shared tier.
pub fn entry_of(url: String, hash: &str, shared: SharedEntry) -> Entry {
    Entry::new(
        url,
        hash.to_string(),
        shared.meta,
        shared.body,
        None,
        Variants::default(),
    )
}
