//! The derived variants of a stored response: the codings made from its one stored body
//! (`compress::derive`), kept beside it so that each is made once and shares the stored
//! response's freshness, Age, purge and eviction.
//!
//! Two places make them. A complete entry derives a missing coding on first demand
//! ([`Variants::get_or_derive`]); requests asking at once wait for the one derivation. While
//! the body is still arriving, a coding asked for is produced alongside the fill
//! ([`DerivedFills`]): the writer feeds each piece to every derived coding, and readers stream
//! the derived bytes as they come; when the fill completes, the derived bodies are stored with
//! it.

use super::fill_buffer::{FillBuffer, FillState};
use super::metrics::CACHE_METRICS;
use crate::compress::derive::{self, Derivation, DeriveError, Transcoder, VARIANT_SLOTS};
use crate::compress::CompressionConfig;
use bytes::Bytes;
use parking_lot::RwLock;
use std::sync::{Arc, OnceLock};
use tokio::sync::{watch, OnceCell};

/// Bodies up to this size are derived on the request's own thread; larger ones on the
/// blocking pool, so a large body does not stall the other requests of the thread.
const INLINE_DERIVE_BYTES: usize = 256 * 1024;

/// The derived codings of one stored body, by [`Derivation::slot`]. The slots are allocated
/// when the first variant is made: most stored responses never get one.
#[derive(Default)]
pub struct Variants {
    slots: OnceLock<Box<[OnceCell<Bytes>; VARIANT_SLOTS]>>,
}

impl Variants {
    /// Variants already made while the body was filled.
    pub fn with(made: [Option<Bytes>; VARIANT_SLOTS]) -> Variants {
        let variants = Variants::default();
        if made.iter().any(Option::is_some) {
            let _ = variants.slots.set(Box::new(made.map(OnceCell::new_with)));
        }
        variants
    }

    fn slots(&self) -> &[OnceCell<Bytes>; VARIANT_SLOTS] {
        self.slots.get_or_init(Box::default)
    }

    /// The variant `derivation` makes of `body`, derived now if no one did before; `true`
    /// with it when this call derived it.
    pub async fn get_or_derive(
        &self,
        derivation: Derivation,
        body: &Bytes,
        config: &Arc<CompressionConfig>,
    ) -> Result<(Bytes, bool), DeriveError> {
        let mut derived_here = false;
        let variant = self.slots()[derivation.slot()]
            .get_or_try_init(|| {
                derived_here = true;
                derive(derivation, body.clone(), Arc::clone(config))
            })
            .await?;
        Ok((variant.clone(), derived_here))
    }

    /// Bytes held by the variants made so far.
    pub fn bytes(&self) -> usize {
        self.made().map(|(_, body)| body.len()).sum()
    }

    /// The variants made so far, by slot (what an L2 tier would store with the entry).
    pub fn made(&self) -> impl Iterator<Item = (usize, &Bytes)> {
        self.slots
            .get()
            .into_iter()
            .flat_map(|slots| slots.iter().enumerate())
            .filter_map(|(slot, cell)| cell.get().map(|body| (slot, body)))
    }
}

async fn derive(
    derivation: Derivation,
    body: Bytes,
    config: Arc<CompressionConfig>,
) -> Result<Bytes, DeriveError> {
    if body.len() <= INLINE_DERIVE_BYTES {
        return derive::derive_whole(derivation, &body, &config);
    }
    tokio::task::spawn_blocking(move || derive::derive_whole(derivation, &body, &config))
        .await
        .map_err(|e| DeriveError::Start(std::io::Error::other(e)))?
}

/// A derived coding produced while its primary body fills.
struct DerivedFill {
    transcoder: Transcoder,
    body: Arc<RwLock<FillBuffer>>,
    state: watch::Sender<FillState>,
    written: usize,
    ended: bool,
}

impl DerivedFill {
    /// Transforms one piece of the primary body and publishes the result to its readers. A
    /// failure (a corrupt stored coding) abandons this variant only.
    fn push(&mut self, data: &[u8], end: bool) {
        if self.ended {
            return;
        }
        self.ended = end;
        match self.transcoder.push(data, end) {
            Ok(out) => {
                self.body.write().data.extend_from_slice(&out);
                self.written += out.len();
                self.state.send_replace(if end {
                    FillState::Complete(self.written)
                } else {
                    FillState::Partial(self.written)
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "derived variant abandoned");
                self.ended = true;
                self.state.send_replace(FillState::Abandoned);
            }
        }
    }

    fn reader(&self) -> (Arc<RwLock<FillBuffer>>, watch::Receiver<FillState>) {
        (Arc::clone(&self.body), self.state.subscribe())
    }

    /// The whole derived body, once complete and untrimmed.
    fn finished(&self) -> Option<Bytes> {
        let complete = matches!(*self.state.borrow(), FillState::Complete(_));
        let body = self.body.read();
        (complete && body.base == 0).then(|| Bytes::copy_from_slice(&body.data))
    }
}

/// The derived codings of one fill, by slot. The fill keeps them behind one lock, taken by the
/// writer around each append so that a coding started mid-fill catches up on exactly the bytes
/// written before it.
#[derive(Default)]
pub struct DerivedFills {
    slots: [Option<DerivedFill>; VARIANT_SLOTS],
}

/// Where a reader of a derived fill reads.
pub type FillReader = (Arc<RwLock<FillBuffer>>, watch::Receiver<FillState>);

impl DerivedFills {
    /// True when some coding is being derived.
    pub fn any(&self) -> bool {
        self.slots.iter().any(Option::is_some)
    }

    /// A reader of `derivation`'s variant, started now if needed from `primary` (every byte
    /// written so far; `complete` when that is the whole body). `trimming`: only the filling
    /// request reads this fill, so read bytes are dropped.
    pub fn attach(
        &mut self,
        derivation: Derivation,
        config: &CompressionConfig,
        primary: &[u8],
        complete: bool,
        trimming: bool,
    ) -> Result<FillReader, DeriveError> {
        let slot = &mut self.slots[derivation.slot()];
        if let Some(fill) = slot {
            return Ok(fill.reader());
        }
        let (state, _) = watch::channel(FillState::Partial(0));
        let mut fill = DerivedFill {
            transcoder: Transcoder::new(derivation, config)?,
            body: Arc::new(RwLock::new(FillBuffer {
                trimming,
                ..FillBuffer::default()
            })),
            state,
            written: 0,
            ended: false,
        };
        fill.push(primary, complete);
        CACHE_METRICS.derived[derivation.slot()].inc();
        let reader = fill.reader();
        *slot = Some(fill);
        Ok(reader)
    }

    /// Feeds a piece of the primary body to every derived coding.
    pub fn push(&mut self, data: &[u8], end: bool) {
        for fill in self.slots.iter_mut().flatten() {
            fill.push(data, end);
        }
    }

    /// From now on only the filling request reads: derived bytes are dropped once read.
    pub fn start_trimming(&mut self) {
        for fill in self.slots.iter_mut().flatten() {
            fill.body.write().trimming = true;
        }
    }

    /// Ends every derived coding (the primary body is complete) and returns the whole ones.
    pub fn finish(&mut self) -> [Option<Bytes>; VARIANT_SLOTS] {
        self.push(&[], true);
        std::array::from_fn(|slot| self.slots[slot].as_ref().and_then(DerivedFill::finished))
    }

    /// The primary fill was abandoned: so is every derived one.
    pub fn abandon(&mut self) {
        for fill in self.slots.iter_mut().flatten() {
            fill.ended = true;
            fill.state.send_replace(FillState::Abandoned);
        }
    }
}
