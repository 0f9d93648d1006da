//! Cache storage on moka: complete entries (`entry`) in a size-bounded moka cache (weighted by
//! body, header and derived-variant bytes), entries being filled kept aside (`fill`, which
//! hands each finished entry back through [`FillSink`]) so that concurrent readers stream the
//! body as it arrives, the readers, and the choice of the coding a reader serves (`variants`).
//! What passes to and from the shared tier is in `shared::l1`.
//!
//! Lifecycle of an entry: `get_miss_handler` creates a fill → its writer appends body pieces
//! → `finish` moves it into moka (and, with a shared tier, writes it to Redis) → derived
//! codings are added on demand (re-weighing it; they stay in this instance) → moka evicts it
//! by weight, or a purge removes it; its variants go with it. A miss in moka looks in the
//! shared tier before the origin.

use super::entry::Entry;
use super::fill::{Attached, FillSink, Filling, PartialReader, Writer};
use super::metrics::CACHE_METRICS;
use super::shared::{self, Found, SharedEntry, SharedTier};
use crate::compress::derive::{Derivable, Derivation};
use crate::compress::CompressionConfig;
use async_trait::async_trait;
use bytes::Bytes;
use moka::ops::compute::Op;
use parking_lot::RwLock;
use pingora::cache::key::{CacheHashKey, CacheKey};
use pingora::cache::storage::{HandleHit, HitHandler, MissHandler, PurgeOutcome, PurgeTarget};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheMeta, PurgeType, Storage};
use pingora::{Error, ErrorType, Result};
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Default [`MokaStorage::with_fill_wait`], the default `lock_timeout`.
const DEFAULT_FILL_WAIT: Duration = Duration::from_secs(5);

/// The moka-backed store. One instance lives for the process (`&'static`, as pingora-cache
/// requires); reloads change the bounds of new fills only.
pub struct MokaStorage {
    complete: moka::sync::Cache<String, Arc<Entry>>,
    filling: RwLock<HashMap<String, Arc<Filling>>>,
    next_fill_id: AtomicU64,
    max_object_size: usize,
    /// Longest a lookup waits for a fill of unknown length to complete (`lock_timeout`).
    fill_wait: Duration,
}

impl MokaStorage {
    pub fn new(max_size: u64, max_object_size: usize) -> Self {
        let complete = moka::sync::Cache::builder()
            .max_capacity(max_size)
            .weigher(|_key: &String, entry: &Arc<Entry>| entry.weight())
            .eviction_listener(|_key, entry: Arc<Entry>, cause| {
                if cause.was_evicted() {
                    CACHE_METRICS.evictions.inc();
                }
                let _ = entry;
            })
            .build();
        MokaStorage {
            complete,
            filling: RwLock::new(HashMap::new()),
            next_fill_id: AtomicU64::new(1),
            max_object_size,
            fill_wait: DEFAULT_FILL_WAIT,
        }
    }

    /// Sets how long a lookup waits for a fill of unknown length (default 5 s).
    pub fn with_fill_wait(mut self, fill_wait: Duration) -> Self {
        self.fill_wait = fill_wait;
        self
    }

    /// A fill of unknown length is not streamed to other readers (it may outgrow
    /// `max_object_size` and never be stored), so a lookup waits for it to end, up to
    /// `fill_wait`: concurrent misses still make one upstream request (pingora-cache releases
    /// its lock as soon as a fill starts).
    async fn wait_for_unshared_fill(&self, hash: &str) {
        let fill = self
            .filling
            .read()
            .get(hash)
            .filter(|f| !f.streamable)
            .cloned();
        if let Some(fill) = fill {
            fill.settled(self.fill_wait).await;
        }
    }

    /// Bytes and entries held (for the gauges).
    pub fn usage(&self) -> (u64, u64) {
        self.complete.run_pending_tasks();
        (self.complete.weighted_size(), self.complete.entry_count())
    }

    /// Removes every stored variant whose URL satisfies `matches`; returns how many.
    pub fn purge_where(&self, matches: impl Fn(&str) -> bool) -> usize {
        let doomed: Vec<Arc<String>> = self
            .complete
            .iter()
            .filter(|(_, entry)| matches(&entry.url))
            .map(|(key, _)| key)
            .collect();
        for key in &doomed {
            self.complete.invalidate(key.as_str());
        }
        let mut filling = self.filling.write();
        let before = filling.len();
        filling.retain(|_, fill| !matches(&fill.url));
        doomed.len() + (before - filling.len())
    }

    fn insert(&self, entry: Arc<Entry>) {
        self.complete.insert(entry.key().to_string(), entry);
    }

    /// Weighs `entry` again after a variant was added or its meta parsed, unless it was replaced or removed
    /// meanwhile.
    fn reweigh(&self, entry: &Arc<Entry>) {
        self.complete
            .entry_by_ref(entry.key())
            .and_compute_with(|current| match current {
                Some(current) if Arc::ptr_eq(current.value(), entry) => Op::Put(Arc::clone(entry)),
                _ => Op::Nop,
            });
    }

    fn hit_from_filling(fill: &Arc<Filling>) -> Result<Option<(CacheMeta, HitHandler)>> {
        let meta = CacheMeta::deserialize(&fill.meta.0, &fill.meta.1)?;
        Ok(Some((meta, Box::new(fill.reader()))))
    }

    /// What L1 holds for `hash`: a fill in progress is newer than any stored entry, so it is
    /// preferred (a refreshed response is visible at once), but only when it is sure to
    /// complete (known, bounded size).
    fn local_hit(&'static self, hash: &str) -> Result<Option<(CacheMeta, HitHandler)>> {
        if let Some(fill) = self.filling.read().get(hash).filter(|f| f.streamable) {
            return Self::hit_from_filling(fill);
        }
        let Some(entry) = self.complete.get(hash) else {
            return Ok(None);
        };
        let (meta, newly_parsed) = entry.hit_meta()?;
        if newly_parsed {
            self.reweigh(&entry);
        }
        Ok(Some((meta, CompleteReader::boxed(entry, Tier::Local))))
    }

    /// L1 missed: L2, which may wait for another instance's fill of the same key.
    async fn lookup_shared(
        &'static self,
        tier: &'static SharedTier,
        key: &CacheKey,
        hash: &str,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let url = url_of(key);
        let found = tier
            .find_or_claim(&url, hash, || self.local_hit(hash).ok().flatten())
            .await;
        Ok(match found {
            Found::Shared(entry) => self.admit_shared(url, hash, entry),
            Found::Local(hit) => Some(hit),
            Found::Nothing => None,
        })
    }

    /// An L1 entry past its freshness: another instance may have refreshed it in L2.
    async fn fresher_from(
        &'static self,
        tier: &'static SharedTier,
        key: &CacheKey,
        hash: &str,
        local: (CacheMeta, HitHandler),
    ) -> (CacheMeta, HitHandler) {
        let now = SystemTime::now();
        if local.0.is_fresh(now) {
            return local;
        }
        let url = url_of(key);
        let Some(entry) = tier.find_fresher(&url, hash).await else {
            return local;
        };
        match self.admit_shared(url, hash, entry) {
            Some(shared) if shared.0.is_fresh(now) => shared,
            _ => local,
        }
    }

    /// Copies an L2 entry into L1 and reads it from there; `None` if its meta is unreadable.
    fn admit_shared(
        &'static self,
        url: String,
        hash: &str,
        shared: SharedEntry,
    ) -> Option<(CacheMeta, HitHandler)> {
        let meta = CacheMeta::deserialize(&shared.meta.0, &shared.meta.1).ok()?;
        let entry = Arc::new(shared::l1::entry_of(url, hash, shared));
        self.insert(Arc::clone(&entry));
        Some((meta, CompleteReader::boxed(entry, Tier::Shared)))
    }
}

/// Where a hit was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// This instance's moka cache.
    Local,
    /// The shared tier on Redis (then copied into L1).
    Shared,
}

/// The tier a hit handler of this store read from (`None` for other handlers).
pub fn tier_of(hit: &HitHandler) -> Option<Tier> {
    hit.as_any()
        .downcast_ref::<CompleteReader>()
        .map(|reader| reader.tier)
}

/// The URL a cache key was made from (the primary key text, see `cache::key`).
fn url_of(key: &CacheKey) -> String {
    key.primary_key_str().unwrap_or_default().to_string()
}

/// What the stored representation behind a reader allows, decided once per stored response
/// (`decide` runs for the first request that asks); `None` for a reader of another store.
pub fn derivable(handler: &HitHandler, decide: impl FnOnce() -> Derivable) -> Option<Derivable> {
    let any = handler.as_any();
    if let Some(reader) = any.downcast_ref::<CompleteReader>() {
        return Some(reader.entry.derivable(decide));
    }
    any.downcast_ref::<PartialReader>()
        .map(|reader| *reader.fill().derivable.get_or_init(decide))
}

/// The outcome of [`MokaStorage::select_variant`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selected {
    /// The reader now serves the derived variant, of this length when known.
    Variant(Option<usize>),
    /// It serves the stored body (the variant could not be made).
    Stored,
}

impl MokaStorage {
    /// Makes a reader of this store serve `derivation`'s variant of its stored body instead of
    /// the body itself: taken from the variants made before, or made now (once, however many
    /// ask at the same time).
    pub async fn select_variant(
        &self,
        handler: &mut HitHandler,
        derivation: Derivation,
        config: &Arc<CompressionConfig>,
    ) -> Selected {
        if let Some(reader) = handler.as_any_mut().downcast_mut::<PartialReader>() {
            match reader.select(derivation, config) {
                Attached::Streaming => return Selected::Variant(None),
                Attached::Unavailable => return Selected::Stored,
                // Stored meanwhile: read the stored entry instead, and take its variant.
                Attached::Stored(entry) => *handler = CompleteReader::boxed(entry, Tier::Local),
            }
        }
        let Some(reader) = handler.as_any_mut().downcast_mut::<CompleteReader>() else {
            return Selected::Stored;
        };
        let entry = Arc::clone(&reader.entry);
        match entry
            .variants()
            .get_or_derive(derivation, entry.body(), config)
            .await
        {
            Ok((variant, derived_here)) => {
                if derived_here {
                    CACHE_METRICS.derived[derivation.slot()].inc();
                    self.reweigh(&entry);
                }
                reader.serve(variant);
                Selected::Variant(Some(reader.end))
            }
            Err(e) => {
                tracing::warn!(url = %entry.url, error = %e, "cannot derive a variant of a stored response");
                Selected::Stored
            }
        }
    }
}

impl FillSink for MokaStorage {
    fn max_object_size(&self) -> usize {
        self.max_object_size
    }

    fn store(&self, entry: Arc<Entry>) {
        self.insert(entry);
    }

    fn forget_fill(&self, hash: &str, id: u64) {
        let mut filling = self.filling.write();
        if filling.get(hash).is_some_and(|f| f.id == id) {
            filling.remove(hash);
        }
    }

    fn share(&self, entry: &Entry, meta: &CacheMeta) {
        shared::l1::share(entry, meta);
    }

    fn release_shared_claim(&self, hash: &str) {
        shared::l1::release_claim(hash);
    }
}

#[async_trait]
impl Storage for MokaStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = key.combined();
        self.wait_for_unshared_fill(&hash).await;
        let local = self.local_hit(&hash)?;
        match (local, shared::get()) {
            (Some(hit), None) => Ok(Some(hit)),
            (Some(hit), Some(tier)) => Ok(Some(self.fresher_from(tier, key, &hash, hit).await)),
            (None, None) => Ok(None),
            (None, Some(tier)) => self.lookup_shared(tier, key, &hash).await,
        }
    }

    async fn lookup_streaming_write(
        &'static self,
        key: &CacheKey,
        streaming_write_tag: Option<&[u8]>,
        trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(tag) = streaming_write_tag.and_then(|t| <[u8; 8]>::try_from(t).ok()) else {
            return self.lookup(key, trace).await;
        };
        let id = u64::from_be_bytes(tag);
        let filling = self.filling.read();
        // The request filling the entry always reads its own fill (pingora-cache requires it).
        match filling.get(&key.combined()) {
            Some(fill) if fill.id == id => Self::hit_from_filling(fill),
            _ => Error::e_explain(ErrorType::InternalError, "the fill being written is gone"),
        }
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let hash = key.combined();
        let declared = crate::fields::content_length(meta.headers())
            .and_then(|length| usize::try_from(length).ok());
        let fill = Arc::new(Filling::new(
            self.next_fill_id.fetch_add(1, Ordering::Relaxed),
            url_of(key),
            meta.serialize()?,
            declared,
            self.max_object_size,
        ));
        self.filling.write().insert(hash.clone(), Arc::clone(&fill));
        Ok(Box::new(Writer {
            sink: self,
            hash,
            id_tag: fill.id.to_be_bytes(),
            fill,
            written: 0,
            too_large: false,
            finished: false,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let hash = target.key().combined();
        let removed_fill = self.filling.write().remove(&hash).is_some();
        let removed = self.complete.remove(&hash);
        // The compact key has no URL: L2 can only be told when L1 had the entry.
        if let (Some(tier), Some(entry)) = (shared::get(), &removed) {
            tier.delete(&entry.url, &hash);
        }
        let removed = removed.is_some();
        Ok(if removed || removed_fill {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = key.combined();
        let Some(entry) = self.complete.get(&hash) else {
            return Ok(false);
        };
        let updated = Arc::new(entry.with_meta(meta)?);
        self.insert(Arc::clone(&updated));
        shared::l1::share(&updated, meta);
        Ok(true)
    }

    fn support_streaming_partial_write(&self) -> bool {
        true
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// Reads a complete entry (its body or one of its variants), optionally a byte range of it.
pub struct CompleteReader {
    entry: Arc<Entry>,
    body: Bytes,
    start: usize,
    end: usize,
    done: bool,
    tier: Tier,
}

impl CompleteReader {
    fn new(entry: Arc<Entry>, tier: Tier) -> CompleteReader {
        let body = entry.body().clone();
        CompleteReader {
            end: body.len(),
            entry,
            body,
            start: 0,
            done: false,
            tier,
        }
    }

    fn boxed(entry: Arc<Entry>, tier: Tier) -> HitHandler {
        Box::new(CompleteReader::new(entry, tier))
    }

    fn serve(&mut self, body: Bytes) {
        self.start = 0;
        self.end = body.len();
        self.body = body;
    }
}

#[async_trait]
impl HandleHit for CompleteReader {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let length = self.body.len();
        if start >= length && length > 0 {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek start {start} past the end {length}"),
            );
        }
        self.start = start;
        self.end = end.map_or(length, |end| end.min(length));
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.body.len()
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::PARSED_META_BYTES;
    use crate::compress::Encoding;
    use pingora::cache::storage::MissFinishType;
    use pingora::cache::trace::Span;
    use pingora::http::ResponseHeader;
    use std::time::{Duration, SystemTime};

    const URL: &str = "http://example.test:80/a";

    fn store(max_object_size: usize) -> &'static MokaStorage {
        Box::leak(Box::new(MokaStorage::new(1 << 20, max_object_size)))
    }

    fn key(url: &str) -> CacheKey {
        crate::cache::key::cache_key(url)
    }

    fn meta(content_length: Option<usize>) -> CacheMeta {
        let mut header = ResponseHeader::build(200, None).expect("header");
        if let Some(length) = content_length {
            header
                .insert_header("content-length", length.to_string())
                .expect("content-length");
        }
        let now = SystemTime::now();
        CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header)
    }

    async fn fill(store: &'static MokaStorage, url: &str, pieces: &[&'static [u8]]) -> usize {
        let length = pieces.iter().map(|p| p.len()).sum();
        let span = Span::inactive();
        let mut writer = store
            .get_miss_handler(&key(url), &meta(Some(length)), &span.handle())
            .await
            .expect("miss handler");
        for (n, piece) in pieces.iter().enumerate() {
            let eof = n + 1 == pieces.len();
            writer
                .write_body(Bytes::from_static(piece), eof)
                .await
                .expect("written");
        }
        match writer.finish().await.expect("finished") {
            MissFinishType::Created(size) => size,
            _ => panic!("a fill finishes as Created"),
        }
    }

    /// A fill of `URL` declaring `length`, with its first piece written.
    async fn start_fill(
        store: &'static MokaStorage,
        length: Option<usize>,
        first: &'static [u8],
    ) -> MissHandler {
        writer(store, URL, &meta(length), first, false).await
    }

    /// A fill of `url` with `meta`, `first` written (the whole body with `eof`).
    async fn writer(
        store: &'static MokaStorage,
        url: &str,
        meta: &CacheMeta,
        first: &[u8],
        eof: bool,
    ) -> MissHandler {
        let span = Span::inactive();
        let mut writer = store
            .get_miss_handler(&key(url), meta, &span.handle())
            .await
            .expect("miss handler");
        writer
            .write_body(Bytes::copy_from_slice(first), eof)
            .await
            .expect("first piece");
        writer
    }

    async fn read_all(hit: &mut HitHandler) -> Vec<u8> {
        let mut body = Vec::new();
        while let Some(chunk) = hit.read_body().await.expect("read") {
            body.extend_from_slice(&chunk);
        }
        body
    }

    async fn lookup(store: &'static MokaStorage, url: &str) -> Option<(CacheMeta, HitHandler)> {
        let span = Span::inactive();
        store
            .lookup(&key(url), &span.handle())
            .await
            .expect("lookup")
    }

    #[tokio::test]
    async fn a_finished_fill_is_found_with_its_whole_body() {
        let store = store(1024);
        assert!(lookup(store, URL).await.is_none());
        assert!(fill(store, URL, &[b"hello ", b"world"]).await > 11);
        let (meta, mut hit) = lookup(store, URL).await.expect("stored");
        assert_eq!(meta.response_header().status, 200);
        assert_eq!(read_all(&mut hit).await, b"hello world");
        assert_eq!(store.usage().1, 1);
    }

    #[tokio::test]
    async fn the_first_hit_keeps_the_parsed_meta_and_the_entry_weighs_it() {
        let store = store(1024);
        fill(store, URL, &[b"hello"]).await;
        let (bytes_before, _) = store.usage();
        let (first, _) = lookup(store, URL).await.expect("stored");
        let (bytes_after, _) = store.usage();
        assert_eq!(bytes_after, bytes_before + PARSED_META_BYTES as u64);
        let (second, _) = lookup(store, URL).await.expect("still stored");
        assert_eq!(store.usage().0, bytes_after, "weighed once");
        assert_eq!(
            second.response_header().status,
            first.response_header().status
        );
        assert_eq!(
            second.response_header().headers,
            first.response_header().headers
        );
        assert_eq!(second.created(), first.created());
        assert_eq!(second.fresh_until(), first.fresh_until());
    }

    #[tokio::test]
    async fn a_fill_past_max_object_size_is_not_stored() {
        let store = store(4);
        assert_eq!(fill(store, URL, &[b"12345"]).await, 0);
        assert!(lookup(store, URL).await.is_none());
    }

    #[tokio::test]
    async fn a_complete_entry_can_be_read_by_range() {
        let store = store(1024);
        fill(store, URL, &[b"0123456789"]).await;
        let (_, mut hit) = lookup(store, URL).await.expect("stored");
        assert!(hit.can_seek());
        hit.seek(2, Some(5)).expect("seek");
        assert_eq!(read_all(&mut hit).await, b"234");
        assert!(hit.seek(10, None).is_err());
    }

    #[tokio::test]
    async fn readers_stream_a_fill_of_known_size_while_it_arrives() {
        let store = store(1024);
        let mut writer = start_fill(store, Some(6), b"abc").await;
        let (_, mut reader) = lookup(store, URL).await.expect("the fill is visible");
        assert_eq!(
            reader.read_body().await.expect("read").as_deref(),
            Some(&b"abc"[..])
        );
        writer
            .write_body(Bytes::from_static(b"def"), true)
            .await
            .expect("last piece");
        writer.finish().await.expect("finished");
        assert_eq!(read_all(&mut reader).await, b"def");
    }

    #[tokio::test]
    async fn an_abandoned_fill_fails_its_readers_and_leaves_nothing() {
        let store = store(1024);
        let writer = start_fill(store, Some(6), b"abc").await;
        let (_, mut reader) = lookup(store, URL).await.expect("the fill is visible");
        drop(writer);
        assert!(reader.read_body().await.is_err());
        assert!(lookup(store, URL).await.is_none());
    }

    #[tokio::test]
    async fn a_fill_of_unknown_size_is_not_streamed_but_waited_for() {
        let store: &'static MokaStorage = Box::leak(Box::new(
            MokaStorage::new(1 << 20, 1024).with_fill_wait(Duration::from_millis(50)),
        ));
        let writer = start_fill(store, None, b"abc").await;
        assert!(
            lookup(store, URL).await.is_none(),
            "nothing within the wait"
        );
        let waiter = tokio::spawn(lookup_ok(store, URL));
        tokio::task::yield_now().await;
        writer.finish().await.expect("finished");
        assert!(
            waiter.await.expect("waiter"),
            "found once the fill completed"
        );
    }

    async fn lookup_ok(store: &'static MokaStorage, url: &'static str) -> bool {
        lookup(store, url).await.is_some()
    }

    #[tokio::test]
    async fn purges_match_stored_urls() {
        let store = store(1024);
        fill(store, "http://a.test:80/x/1", &[b"1"]).await;
        fill(store, "http://a.test:80/x/2", &[b"2"]).await;
        fill(store, "http://a.test:80/y", &[b"3"]).await;
        assert_eq!(
            store.purge_where(|url| url.starts_with("http://a.test:80/x/")),
            2
        );
        assert!(lookup(store, "http://a.test:80/x/1").await.is_none());
        assert!(lookup(store, "http://a.test:80/y").await.is_some());
    }

    /// Issue 12: a waiter woken by the lock could look the key up after the fill was forgotten
    /// but before the entry was stored, miss, and fetch the origin a second time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lookup_while_a_fill_finishes_finds_the_fill_or_the_entry() {
        let store = store(1024);
        for round in 0..200 {
            let url: &'static str =
                Box::leak(format!("http://example.test:80/r{round}").into_boxed_str());
            let span = Span::inactive();
            let mut writer = store
                .get_miss_handler(&key(url), &meta(Some(2)), &span.handle())
                .await
                .expect("miss handler");
            writer
                .write_body(Bytes::from_static(b"ok"), true)
                .await
                .expect("written");
            let looker = tokio::spawn(async move {
                let mut misses = 0;
                for _ in 0..50 {
                    if lookup(store, url).await.is_none() {
                        misses += 1;
                    }
                    tokio::task::yield_now().await;
                }
                misses
            });
            writer.finish().await.expect("finished");
            assert_eq!(looker.await.expect("looker"), 0, "round {round}");
        }
    }

    fn json_meta(length: usize) -> CacheMeta {
        let mut meta = meta(Some(length));
        meta.response_header_mut()
            .insert_header("content-type", "application/json")
            .expect("content-type");
        meta
    }

    fn to_gzip() -> Derivation {
        Derivation {
            from: Encoding::Identity,
            to: Encoding::Compressed(crate::compress::Algorithm::Gzip),
        }
    }

    fn config() -> Arc<CompressionConfig> {
        Arc::new(CompressionConfig::default())
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .expect("gzip");
        out
    }

    const JSON_BODY: &[u8] =
        b"[\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\"]";

    #[tokio::test]
    async fn a_variant_of_a_stored_body_is_derived_once_and_counted_in_its_weight() {
        let store = store(1 << 16);
        let writer = writer(store, URL, &json_meta(JSON_BODY.len()), JSON_BODY, true).await;
        writer.finish().await.expect("finished");
        let weight_before = store.usage().0;
        let (_, mut first) = lookup(store, URL).await.expect("stored");
        let (_, mut second) = lookup(store, URL).await.expect("stored");
        let config = config();
        let (a, b) = tokio::join!(
            store.select_variant(&mut first, to_gzip(), &config),
            store.select_variant(&mut second, to_gzip(), &config)
        );
        assert!(matches!(a, Selected::Variant(Some(_))), "{a:?}");
        assert_eq!(a, b);
        assert_eq!(gunzip(&read_all(&mut first).await), JSON_BODY);
        assert_eq!(gunzip(&read_all(&mut second).await), JSON_BODY);
        let entry = store.complete.get(&key(URL).combined()).expect("entry");
        assert_eq!(entry.variants().made().count(), 1);
        assert!(store.usage().0 > weight_before, "the variant is weighed");
    }

    #[tokio::test]
    async fn a_variant_asked_for_while_the_body_fills_is_made_alongside_and_stored_with_it() {
        let store = store(1 << 16);
        let (head, tail) = JSON_BODY.split_at(10);
        let mut writer = writer(store, URL, &json_meta(JSON_BODY.len()), head, false).await;
        let (_, mut reader) = lookup(store, URL).await.expect("the fill is visible");
        let config = config();
        assert_eq!(
            store.select_variant(&mut reader, to_gzip(), &config).await,
            Selected::Variant(None)
        );
        writer
            .write_body(Bytes::copy_from_slice(tail), true)
            .await
            .expect("tail");
        writer.finish().await.expect("finished");
        assert_eq!(gunzip(&read_all(&mut reader).await), JSON_BODY);
        let entry = store.complete.get(&key(URL).combined()).expect("entry");
        assert_eq!(entry.variants().made().count(), 1, "stored with the entry");
        let (_, mut hit) = lookup(store, URL).await.expect("stored");
        assert!(matches!(
            store.select_variant(&mut hit, to_gzip(), &config).await,
            Selected::Variant(Some(_))
        ));
        assert_eq!(gunzip(&read_all(&mut hit).await), JSON_BODY);
    }

    #[tokio::test]
    async fn a_chunked_response_is_stored_with_its_length() {
        let store = store(1024);
        fill_unknown_length(store, b"abcdef").await;
        let (meta, _) = lookup(store, URL).await.expect("stored");
        assert_eq!(
            meta.headers().get("content-length").map(|v| v.as_bytes()),
            Some(&b"6"[..])
        );
    }

    async fn fill_unknown_length(store: &'static MokaStorage, body: &'static [u8]) {
        let span = Span::inactive();
        let mut writer = store
            .get_miss_handler(&key(URL), &meta(None), &span.handle())
            .await
            .expect("miss handler");
        writer
            .write_body(Bytes::from_static(body), true)
            .await
            .expect("written");
        writer.finish().await.expect("finished");
    }

    #[tokio::test]
    async fn update_meta_replaces_the_header_and_keeps_the_body() {
        let store = store(1024);
        let span = Span::inactive();
        assert!(!store
            .update_meta(&key(URL), &meta(None), &span.handle())
            .await
            .expect("update"));
        fill(store, URL, &[b"body"]).await;
        let mut updated = meta(Some(4));
        updated
            .response_header_mut()
            .insert_header("x-revalidated", "1")
            .expect("header");
        assert!(store
            .update_meta(&key(URL), &updated, &span.handle())
            .await
            .expect("update"));
        let (meta, mut hit) = lookup(store, URL).await.expect("stored");
        assert!(meta.headers().contains_key("x-revalidated"));
        assert_eq!(read_all(&mut hit).await, b"body");
    }
}
