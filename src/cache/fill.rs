//! Entries being filled: the body buffered as it arrives from the upstream (`fill_buffer`),
//! readers streaming it meanwhile (pingora-cache's streaming partial writes), and the derived
//! codings produced alongside (`variants`). The finished [`Entry`] goes to a [`FillSink`],
//! which the store implements: this module knows nothing else of the store.
//!
//! Lifecycle of a fill: `MokaStorage::get_miss_handler` creates it → the [`Writer`] appends
//! body pieces, feeding each to the derived codings too (readers wake on each) → `finish`
//! hands the complete entry to the sink and only then has it forget the fill, so a reader
//! looking it up in between finds one or the other, never neither. A fill that passes `max_object_size` stops
//! buffering and is never stored; the request filling it still gets the whole response.

use super::entry::{Entry, MetaBytes};
use super::fill_buffer::{FillBuffer, FillState};
use super::variants::{DerivedFills, FillReader, Variants};
use crate::compress::derive::{Derivable, Derivation, DeriveError};
use crate::compress::CompressionConfig;
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use pingora::cache::key::CacheKey;
use pingora::cache::storage::{HandleHit, HandleMiss, MissFinishType};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheMeta, Storage};
use pingora::{Error, ErrorType, Result};
use std::any::Any;
use std::sync::{Arc, OnceLock};
use tokio::sync::watch;

/// Where a writer hands its fill: the store (`MokaStorage`) implements it, so that the writer
/// needs nothing else of the store.
pub trait FillSink: Send + Sync {
    /// Bodies larger than this are not stored (`max_object_size`).
    fn max_object_size(&self) -> usize;
    /// Keeps a finished entry.
    fn store(&self, entry: Arc<Entry>);
    /// Forgets fill `id` of `hash` (a newer fill of the same key stays): stored, or given up.
    fn forget_fill(&self, hash: &str, id: u64);
    /// Writes a stored entry to the shared tier, when there is one (returns at once).
    fn share(&self, entry: &Entry, meta: &CacheMeta);
    /// Gives up this instance's claim on filling `hash` in the shared tier (not stored).
    fn release_shared_claim(&self, hash: &str);
}

/// An entry being filled by one writer.
pub struct Filling {
    pub id: u64,
    pub url: String,
    pub meta: MetaBytes,
    /// Other requests may stream from it only when its size is known and within bounds;
    /// otherwise only the request filling it reads it.
    pub streamable: bool,
    body: Arc<RwLock<FillBuffer>>,
    state: watch::Sender<FillState>,
    /// The codings derived while it fills. Taken by the writer around each append.
    derived: Mutex<DerivedFills>,
    /// What the stored representation allows, decided by the first request that asks.
    pub derivable: OnceLock<Derivable>,
    /// The entry it became, once stored: a coding asked for afterwards is made from it.
    stored: OnceLock<Arc<Entry>>,
    /// Set once the writer is done with it: stored (and then forgotten) or given up.
    over: watch::Sender<bool>,
}

/// Where a reader of a fill finds the variant it asks for.
pub enum Attached {
    /// Streaming alongside the fill.
    Streaming,
    /// The fill is already stored: the variant is the stored entry's.
    Stored(Arc<Entry>),
    /// Not available (bytes already read or dropped, or the fill was abandoned).
    Unavailable,
}

impl Filling {
    pub fn new(id: u64, url: String, meta: MetaBytes, declared: Option<usize>, max: usize) -> Self {
        let (state, _) = watch::channel(FillState::Partial(0));
        Filling {
            id,
            url,
            meta,
            streamable: declared.is_some_and(|length| length <= max),
            body: Arc::new(RwLock::new(FillBuffer {
                data: Vec::with_capacity(declared.unwrap_or(0).min(max)),
                ..FillBuffer::default()
            })),
            state,
            derived: Mutex::new(DerivedFills::default()),
            derivable: OnceLock::new(),
            stored: OnceLock::new(),
            over: watch::channel(false).0,
        }
    }

    /// Waits until the writer is done with the fill (its entry stored, or given up), at most
    /// `within`. Not merely until its body is complete: the entry is stored a moment later,
    /// and a lookup in between would find neither.
    pub async fn settled(&self, within: std::time::Duration) {
        let mut over = self.over.subscribe();
        let _ = tokio::time::timeout(within, over.wait_for(|over| *over)).await;
    }

    /// A reader of the fill from its first byte.
    pub fn reader(self: &Arc<Self>) -> PartialReader {
        PartialReader {
            fill: Arc::clone(self),
            body: Arc::clone(&self.body),
            state: self.state.subscribe(),
            read: 0,
        }
    }

    /// A reader of `derivation`'s variant of this fill; `None` when the bytes it must start
    /// from are gone (a trimmed fill) or the fill was abandoned.
    fn attach(
        &self,
        derivation: Derivation,
        config: &CompressionConfig,
    ) -> Result<Option<FillReader>, DeriveError> {
        let mut derived = self.derived.lock();
        let body = self.body.read();
        let state = *self.state.borrow();
        if body.base != 0 || state == FillState::Abandoned || self.stored.get().is_some() {
            return Ok(None);
        }
        let complete = matches!(state, FillState::Complete(_));
        derived
            .attach(derivation, config, &body.data, complete, body.trimming)
            .map(Some)
    }
}

/// Writes one fill; stores it on `finish`.
pub struct Writer {
    pub sink: &'static dyn FillSink,
    pub hash: String,
    pub id_tag: [u8; 8],
    pub fill: Arc<Filling>,
    pub written: usize,
    pub too_large: bool,
    pub finished: bool,
}

impl Writer {
    fn publish(&self, state: FillState) {
        self.fill.state.send_replace(state);
    }

    /// The stored entry: the body, the variants made alongside, and a header that states the
    /// body's length (a response that came chunked is stored with its length, so hits carry
    /// `Content-Length` and can be served by range).
    fn entry(
        &self,
        variants: [Option<Bytes>; crate::compress::derive::VARIANT_SLOTS],
    ) -> Result<Entry> {
        // Copied, not taken: readers streaming this fill may still be reading the buffer.
        let body = Bytes::copy_from_slice(&self.fill.body.read().data);
        let meta = with_content_length(&self.fill.meta, body.len())?;
        Ok(Entry::new(
            self.fill.url.clone(),
            self.hash.clone(),
            meta,
            body,
            self.fill.derivable.get().copied(),
            Variants::with(variants),
        ))
    }

    /// Ends a fill that will not be stored: readers are told it is over, the store forgets it
    /// and this instance's claim on it in the shared tier is given back.
    fn give_up(&self) {
        self.sink.forget_fill(&self.hash, self.fill.id);
        self.fill.over.send_replace(true);
        self.sink.release_shared_claim(&self.hash);
    }
}

/// `meta` with `Content-Length: length` when its header states no length.
fn with_content_length(meta: &MetaBytes, length: usize) -> Result<MetaBytes> {
    let mut parsed = CacheMeta::deserialize(&meta.0, &meta.1)?;
    let header = parsed.response_header_mut();
    if header.headers.contains_key(http::header::CONTENT_LENGTH)
        || matches!(header.status.as_u16(), 204 | 304)
    {
        return Ok(meta.clone());
    }
    header.remove_header(&http::header::TRANSFER_ENCODING);
    header.insert_header(http::header::CONTENT_LENGTH, length)?;
    parsed.serialize()
}

#[async_trait]
impl HandleMiss for Writer {
    async fn write_body(&mut self, data: Bytes, eof: bool) -> Result<()> {
        let mut derived = self.fill.derived.lock();
        if !self.too_large && self.written + data.len() > self.sink.max_object_size() {
            // Past the bound: it will not be stored. Keep streaming it to the request that
            // fills it (its only reader), dropping what that reader has already read.
            self.too_large = true;
            self.fill.body.write().trimming = true;
            derived.start_trimming();
        }
        self.written += data.len();
        {
            let mut body = self.fill.body.write();
            body.data.extend_from_slice(&data);
            if self.too_large && derived.any() {
                // The filling request reads a derived coding: the primary bytes are done with.
                body.base += body.data.len();
                body.data.clear();
            }
        }
        derived.push(&data, eof);
        self.publish(if eof {
            FillState::Complete(self.written)
        } else {
            FillState::Partial(self.written)
        });
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        self.finished = true;
        let entry = {
            // Under the lock: a coding asked for from now on is made from the stored entry,
            // one asked for before is stored with it.
            let mut derived = self.fill.derived.lock();
            self.publish(FillState::Complete(self.written));
            let variants = derived.finish();
            if self.too_large {
                None
            } else {
                let entry = self.entry(variants).map(Arc::new);
                if let Ok(entry) = &entry {
                    let _ = self.fill.stored.set(Arc::clone(entry));
                }
                Some(entry)
            }
        };
        let entry = match entry {
            None => {
                // Not stored, but not an error either: the response itself reached its client.
                self.give_up();
                tracing::debug!(url = %self.fill.url, bytes = self.written, "response larger than max_object_size: not stored");
                return Ok(MissFinishType::Created(0));
            }
            Some(Err(e)) => {
                self.give_up();
                return Err(e);
            }
            Some(Ok(entry)) => entry,
        };
        let size = entry.weight() as usize;
        // Stored before the fill is forgotten: a request looking the key up in between must
        // find one of them, or it would go to the origin again (issue 12).
        self.sink.store(Arc::clone(&entry));
        self.sink.forget_fill(&self.hash, self.fill.id);
        self.fill.over.send_replace(true);
        if let Ok(meta) = CacheMeta::deserialize(&entry.meta().0, &entry.meta().1) {
            self.sink.share(&entry, &meta);
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
            let mut derived = self.fill.derived.lock();
            self.publish(FillState::Abandoned);
            derived.abandon();
            drop(derived);
            self.give_up();
        }
    }
}

/// Streams a fill in progress (or one of its derived codings): returns new bytes as the writer
/// publishes them.
pub struct PartialReader {
    fill: Arc<Filling>,
    body: Arc<RwLock<FillBuffer>>,
    state: watch::Receiver<FillState>,
    read: usize,
}

impl PartialReader {
    /// Switches to `derivation`'s variant, or says where it is.
    pub fn select(&mut self, derivation: Derivation, config: &CompressionConfig) -> Attached {
        if self.read > 0 {
            return Attached::Unavailable;
        }
        if let Some(entry) = self.fill.stored.get() {
            return Attached::Stored(Arc::clone(entry));
        }
        match self.fill.attach(derivation, config) {
            Ok(Some((body, state))) => {
                self.body = body;
                self.state = state;
                Attached::Streaming
            }
            // Stored between the check above and taking the fill's lock.
            Ok(None) => match self.fill.stored.get() {
                Some(entry) => Attached::Stored(Arc::clone(entry)),
                None => Attached::Unavailable,
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot derive a variant of a fill");
                Attached::Unavailable
            }
        }
    }

    pub fn fill(&self) -> &Filling {
        &self.fill
    }
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
