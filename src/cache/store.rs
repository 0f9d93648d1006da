//! Cache storage on moka: complete entries in a size-bounded moka cache (weighted by body and
//! header bytes), and entries being filled kept aside so that concurrent readers stream the
//! body as it arrives (pingora-cache's streaming partial writes).
//!
//! Lifecycle of an entry: `get_miss_handler` creates a filling entry → the writer appends
//! body chunks (readers of the filling entry wake on each) → `finish` moves it into moka →
//! moka evicts by weight, or a purge removes it. A fill that passes `max_object_size` stops
//! buffering and is never stored; the client still gets the whole response from upstream.

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::RwLock;
use pingora::cache::key::{CacheHashKey, CacheKey};
use pingora::cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheMeta, PurgeType, Storage};
use pingora::{Error, ErrorType, Result};
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

use super::metrics::CACHE_METRICS;
use super::shared::{self, Found, SharedEntry, SharedTier};
use std::time::SystemTime;

/// Serialized meta: (internal, header), as pingora-cache's `CacheMeta::serialize` gives it.
type MetaBytes = (Vec<u8>, Vec<u8>);

/// A complete, stored response.
pub struct Entry {
    /// `scheme://host:port/path?query`, for purges by URL, prefix or glob.
    pub url: String,
    meta: MetaBytes,
    body: Bytes,
}

impl Entry {
    fn weight(&self, key: &str) -> u32 {
        let bytes =
            self.body.len() + self.meta.0.len() + self.meta.1.len() + key.len() + self.url.len();
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FillState {
    Partial(usize),
    Complete(usize),
    /// The writer gave up (error or too large); readers stop with an error.
    Abandoned,
}

/// The body of a fill. Bytes before `base` were dropped: once a fill passes
/// `max_object_size` it will not be stored, and its only reader (the request filling it)
/// no longer needs what it has read.
#[derive(Default)]
struct FillBuffer {
    data: Vec<u8>,
    base: usize,
    trimming: bool,
}

impl FillBuffer {
    /// Bytes from absolute offset `from` to `to`, dropping them when trimming.
    fn take_range(&mut self, from: usize, to: usize) -> Bytes {
        let (start, end) = (
            from.saturating_sub(self.base),
            to.saturating_sub(self.base).min(self.data.len()),
        );
        let chunk = Bytes::copy_from_slice(&self.data[start.min(end)..end]);
        if self.trimming {
            self.data.drain(..end);
            self.base += end;
        }
        chunk
    }
}

/// An entry being filled by one writer.
struct Filling {
    id: u64,
    url: String,
    meta: MetaBytes,
    /// Other requests may stream from it only when its size is known and within bounds;
    /// otherwise only the request filling it reads it.
    streamable: bool,
    body: Arc<RwLock<FillBuffer>>,
    state: watch::Sender<FillState>,
}

/// The moka-backed store. One instance lives for the process (`&'static`, as pingora-cache
/// requires); reloads change the bounds of new fills only.
pub struct MokaStorage {
    complete: moka::sync::Cache<String, Arc<Entry>>,
    filling: RwLock<HashMap<String, Arc<Filling>>>,
    next_fill_id: AtomicU64,
    max_object_size: usize,
}

impl MokaStorage {
    pub fn new(max_size: u64, max_object_size: usize) -> Self {
        let complete = moka::sync::Cache::builder()
            .max_capacity(max_size)
            .weigher(|key: &String, entry: &Arc<Entry>| entry.weight(key))
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

    /// What L1 holds for `hash`: a fill in progress is newer than any stored entry, so it is
    /// preferred (a refreshed response is visible at once), but only when it is sure to
    /// complete (known, bounded size).
    fn local_hit(&self, hash: &str) -> Result<Option<(CacheMeta, HitHandler)>> {
        if let Some(fill) = self.filling.read().get(hash).filter(|f| f.streamable) {
            return Self::hit_from_filling(fill);
        }
        let Some(entry) = self.complete.get(hash) else {
            return Ok(None);
        };
        let meta = CacheMeta::deserialize(&entry.meta.0, &entry.meta.1)?;
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
        &self,
        url: String,
        hash: &str,
        shared: SharedEntry,
    ) -> Option<(CacheMeta, HitHandler)> {
        let meta = CacheMeta::deserialize(&shared.meta.0, &shared.meta.1).ok()?;
        let entry = Arc::new(Entry {
            url,
            meta: shared.meta,
            body: shared.body,
        });
        self.complete.insert(hash.to_string(), Arc::clone(&entry));
        Some((meta, CompleteReader::boxed(entry, Tier::Shared)))
    }

    fn hit_from_filling(fill: &Filling) -> Result<Option<(CacheMeta, HitHandler)>> {
        let meta = CacheMeta::deserialize(&fill.meta.0, &fill.meta.1)?;
        let reader = PartialReader {
            body: Arc::clone(&fill.body),
            state: fill.state.subscribe(),
            read: 0,
        };
        Ok(Some((meta, Box::new(reader))))
    }
}

/// The URL a cache key was made from (the primary key text, see `cache::key`).
fn url_of(key: &CacheKey) -> String {
    key.primary_key_str().unwrap_or_default().to_string()
}

#[async_trait]
impl Storage for MokaStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = key.combined();
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
        let (state, _) = watch::channel(FillState::Partial(0));
        let fill = Arc::new(Filling {
            id: self.next_fill_id.fetch_add(1, Ordering::Relaxed),
            url: url_of(key),
            meta: meta.serialize()?,
            streamable: declared.is_some_and(|length| length <= self.max_object_size),
            body: Arc::new(RwLock::new(FillBuffer {
                data: Vec::with_capacity(declared.unwrap_or(0).min(self.max_object_size)),
                ..FillBuffer::default()
            })),
            state,
        });
        self.filling.write().insert(hash.clone(), Arc::clone(&fill));
        Ok(Box::new(Writer {
            store: self,
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
        let updated = Arc::new(Entry {
            url: entry.url.clone(),
            meta: meta.serialize()?,
            body: entry.body.clone(),
        });
        self.complete.insert(hash.clone(), Arc::clone(&updated));
        share(&hash, &updated, meta);
        Ok(true)
    }

    fn support_streaming_partial_write(&self) -> bool {
        true
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// Writes one fill; moves it into the store on `finish`.
struct Writer {
    store: &'static MokaStorage,
    hash: String,
    id_tag: [u8; 8],
    fill: Arc<Filling>,
    written: usize,
    too_large: bool,
    finished: bool,
}

impl Writer {
    fn publish(&self, state: FillState) {
        self.fill.state.send_replace(state);
    }

    fn remove_fill(&self) {
        let mut filling = self.store.filling.write();
        if filling
            .get(&self.hash)
            .is_some_and(|f| f.id == self.fill.id)
        {
            filling.remove(&self.hash);
        }
    }
}

#[async_trait]
impl HandleMiss for Writer {
    async fn write_body(&mut self, data: Bytes, eof: bool) -> Result<()> {
        if !self.too_large && self.written + data.len() > self.store.max_object_size {
            // Past the bound: it will not be stored. Keep streaming it to the request that
            // fills it (its only reader), dropping what that reader has already read.
            self.too_large = true;
            self.fill.body.write().trimming = true;
        }
        self.written += data.len();
        self.fill.body.write().data.extend_from_slice(&data);
        self.publish(if eof {
            FillState::Complete(self.written)
        } else {
            FillState::Partial(self.written)
        });
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        self.finished = true;
        self.remove_fill();
        if self.too_large {
            // Not stored, but not an error either: the response itself reached its client.
            self.publish(FillState::Complete(self.written));
            tracing::debug!(url = %self.fill.url, bytes = self.written, "response larger than max_object_size: not stored");
            if let Some(tier) = shared::get() {
                tier.release(&self.hash);
            }
            return Ok(MissFinishType::Created(0));
        }
        // Copied, not taken: readers streaming this fill may still be reading the buffer.
        let body = Bytes::copy_from_slice(&self.fill.body.read().data);
        self.publish(FillState::Complete(body.len()));
        let entry = Arc::new(Entry {
            url: self.fill.url.clone(),
            meta: self.fill.meta.clone(),
            body,
        });
        let size = entry.weight(&self.hash) as usize;
        self.store
            .complete
            .insert(self.hash.clone(), Arc::clone(&entry));
        if let Ok(meta) = CacheMeta::deserialize(&entry.meta.0, &entry.meta.1) {
            share(&self.hash, &entry, &meta);
        }
        Ok(MissFinishType::Created(size))
    }

    fn streaming_write_tag(&self) -> Option<&[u8]> {
        Some(&self.id_tag)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.finished {
            self.publish(FillState::Abandoned);
            self.remove_fill();
            if let Some(tier) = shared::get() {
                tier.release(&self.hash);
            }
        }
    }
}

/// Writes a complete entry to the shared tier, when there is one (returns at once).
fn share(hash: &str, entry: &Entry, meta: &CacheMeta) {
    if let Some(tier) = shared::get() {
        let shared = SharedEntry {
            meta: entry.meta.clone(),
            body: entry.body.clone(),
        };
        let ttl = shared::entry::ttl(meta, SystemTime::now());
        tier.store(&entry.url, hash, shared, ttl);
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

/// Reads a complete entry, optionally a byte range of it.
struct CompleteReader {
    entry: Arc<Entry>,
    start: usize,
    end: usize,
    done: bool,
    tier: Tier,
}

impl CompleteReader {
    fn boxed(entry: Arc<Entry>, tier: Tier) -> HitHandler {
        let end = entry.body.len();
        Box::new(CompleteReader {
            entry,
            start: 0,
            end,
            done: false,
            tier,
        })
    }
}

#[async_trait]
impl HandleHit for CompleteReader {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.entry.body.slice(self.start..self.end)))
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
        let length = self.entry.body.len();
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
        self.entry.body.len()
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Streams a fill in progress: returns new bytes as the writer publishes them.
struct PartialReader {
    body: Arc<RwLock<FillBuffer>>,
    state: watch::Receiver<FillState>,
    read: usize,
}

#[async_trait]
impl HandleHit for PartialReader {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        loop {
            let state = *self.state.borrow_and_update();
            let available = match state {
                FillState::Abandoned => {
                    return Error::e_explain(
                        ErrorType::InternalError,
                        "the cache fill was abandoned",
                    );
                }
                FillState::Complete(total) if total == self.read => return Ok(None),
                FillState::Complete(total) | FillState::Partial(total) => total,
            };
            if available > self.read {
                let chunk = self.body.write().take_range(self.read, available);
                if !chunk.is_empty() {
                    self.read += chunk.len();
                    return Ok(Some(chunk));
                }
            }
            if self.state.changed().await.is_err() {
                return Error::e_explain(
                    ErrorType::InternalError,
                    "the cache fill ended without completing",
                );
            }
        }
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn should_count_access(&self) -> bool {
        false
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
        let span = Span::inactive();
        let mut writer = store
            .get_miss_handler(&key(URL), &meta(length), &span.handle())
            .await
            .expect("miss handler");
        writer
            .write_body(Bytes::from_static(first), false)
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
    async fn a_fill_of_unknown_size_is_not_shared_with_other_readers() {
        let store = store(1024);
        let _writer = start_fill(store, None, b"abc").await;
        assert!(lookup(store, URL).await.is_none());
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
