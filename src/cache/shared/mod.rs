//! The shared cache tier (L2) on Redis, or anything speaking its protocol. Several Parapet
//! instances on one Redis share one warm cache: a miss in an instance's moka cache (L1) looks
//! here before the origin, a complete fill is written here, a purge deletes here and reaches
//! every instance's L1 over pub/sub.
//!
//! Lifecycle of a shared fill:
//! 1. L1 misses; [`SharedTier::find_or_claim`] reads the entry (`entry` has the layout).
//! 2. Not there: `SET NX` on the key's lock. The winner fetches from the origin; the others
//!    poll until the entry appears (served as an L2 hit), the lock goes (fetch themselves), or
//!    `lock_timeout` passes (fetch themselves; the lock's own TTL frees it from a dead holder).
//! 3. The winner's fill completes: [`SharedTier::store`] writes it in one transaction with a
//!    TTL of freshness plus stale windows, then releases the lock. A response that is not
//!    stored releases it at once ([`SharedTier::release_claims`]).
//!
//! Redis is never in the way: every operation has a timeout, a circuit breaker keeps a failing
//! Redis out (`breaker`), and any failure means "not in L2" (L1 and the origin carry on).

mod breaker;
mod client;
pub mod entry;
pub mod fanout;
pub mod l1;
pub mod metrics;
mod status;

pub use breaker::BreakerState;
pub use client::SharedError;
pub use entry::SharedEntry;
pub use fanout::PurgeRequest;

use crate::config::SharedCacheConfig;
use bytes::Bytes;
use client::RedisPool;
use entry::Keys;
use metrics::{LookupResult, Operation, WaitResult, SHARED_METRICS};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Between two looks at another instance's fill.
const WAIT_POLL_STEP: Duration = Duration::from_millis(20);
/// Releases the lock only when it still holds our token (it may have expired and been
/// taken by another instance since).
const UNLOCK_SCRIPT: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0";

/// What a lookup in L2 came to.
pub enum Found<T> {
    /// L2 had it (at once, or after another instance's fill).
    Shared(SharedEntry),
    /// While waiting, this instance's own cache got it.
    Local(T),
    /// Go to the origin (this instance holds the fill lock, or L2 cannot help).
    Nothing,
}

/// A fill lock this instance holds.
struct Claim {
    url: String,
    token: String,
}

pub struct SharedTier {
    pool: RedisPool,
    keys: Keys,
    url_for_display: String,
    max_object_size: usize,
    chunk_size: usize,
    lock_timeout: Duration,
    instance: u64,
    next_token: AtomicU64,
    claims: Mutex<HashMap<String, Claim>>,
    /// `claims.len()`, read without the lock at the end of every request that missed.
    claim_count: AtomicUsize,
    on_purge: fn(&PurgeRequest) -> usize,
    /// Purges made here that Redis did not take yet (`fanout`).
    pending_purges: fanout::PendingPurges,
}

static SHARED: OnceLock<&'static SharedTier> = OnceLock::new();

/// Starts the tier once (later calls keep the first); `on_purge` applies a purge received
/// from another instance to this one's L1. Redis need not be up: connections are made on
/// first use and the purge subscription retries.
pub fn init(
    config: &SharedCacheConfig,
    on_purge: fn(&PurgeRequest) -> usize,
) -> Result<&'static SharedTier, SharedError> {
    if let Some(tier) = SHARED.get() {
        return Ok(tier);
    }
    std::sync::LazyLock::force(&SHARED_METRICS);
    let tier: &'static SharedTier = Box::leak(Box::new(SharedTier {
        pool: RedisPool::new(config)?,
        keys: Keys::new(&config.key_prefix),
        url_for_display: config.url_without_credentials(),
        max_object_size: usize::try_from(config.max_object_size).unwrap_or(usize::MAX),
        chunk_size: usize::try_from(config.chunk_size).unwrap_or(usize::MAX),
        lock_timeout: config.lock_timeout,
        instance: rand::random(),
        next_token: AtomicU64::new(1),
        claims: Mutex::new(HashMap::new()),
        claim_count: AtomicUsize::new(0),
        on_purge,
        pending_purges: fanout::PendingPurges::default(),
    }));
    let tier = *SHARED.get_or_init(|| tier);
    tier.pool.spawn(fanout::subscribe_forever(tier));
    tier.pool.spawn(fanout::retry_pending_forever(tier));
    Ok(tier)
}

/// The tier, when `[cache.shared]` is configured and `init` ran.
pub fn get() -> Option<&'static SharedTier> {
    SHARED.get().copied()
}

impl SharedTier {
    /// Looks up an entry that L1 does not have. On a miss, claims the fill for this instance
    /// or waits for the instance that has claimed it, checking `local` (this instance's own
    /// cache) as it waits.
    pub async fn find_or_claim<T>(
        &'static self,
        url: &str,
        hash: &str,
        local: impl Fn() -> Option<T>,
    ) -> Found<T> {
        if self.claims.lock().contains_key(hash) {
            // This instance is filling it: pingora's own cache lock coalesces the requests.
            return Found::Nothing;
        }
        match self.read(url, hash).await {
            Ok(Some(entry)) => {
                SHARED_METRICS.lookups[LookupResult::Hit as usize].inc();
                return Found::Shared(entry);
            }
            Ok(None) => SHARED_METRICS.lookups[LookupResult::Miss as usize].inc(),
            Err(_) => {
                SHARED_METRICS.lookups[LookupResult::Unavailable as usize].inc();
                return Found::Nothing;
            }
        }
        match self.claim(url, hash).await {
            Ok(true) | Err(_) => Found::Nothing,
            Ok(false) => self.wait_for_fill(url, hash, local).await,
        }
    }

    /// Looks up an entry to replace a stale one in L1: no claim, no wait.
    pub async fn find_fresher(&'static self, url: &str, hash: &str) -> Option<SharedEntry> {
        self.read(url, hash).await.ok().flatten()
    }

    /// Writes a complete entry (when within `max_object_size` and `ttl` is some), then
    /// releases this instance's claim on it. Returns at once; the write runs on its own.
    pub fn store(&'static self, url: &str, hash: &str, entry: SharedEntry, ttl: Option<Duration>) {
        let claim = self.take_claim(hash);
        let too_large = entry.body.len() > self.max_object_size;
        if too_large {
            SHARED_METRICS.too_large.inc();
        }
        let write = ttl.filter(|_| !too_large).map(|ttl| {
            let key = self.keys.entry(url, hash);
            (key, hash.to_string(), entry, ttl)
        });
        let lock = self.keys.lock(hash);
        self.pool.spawn(async move {
            if let Some((key, hash, entry, ttl)) = write {
                if self.write(key, &hash, entry, ttl).await.is_ok() {
                    SHARED_METRICS.stored.inc();
                }
            }
            if let Some(claim) = claim {
                let _ = self.unlock(lock, claim.token).await;
            }
        });
    }

    /// Releases this instance's claim on `hash` (its fill was abandoned or will not be
    /// stored), so waiting instances fetch at once.
    pub fn release(&'static self, hash: &str) {
        if let Some(claim) = self.take_claim(hash) {
            self.spawn_unlock(hash, claim);
        }
    }

    /// Releases the claims this instance holds on variants of `url` (its response was not
    /// stored, or the request failed before a fill began).
    pub fn release_claims(&'static self, url: &str) {
        if self.claim_count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let hashes: Vec<String> = self
            .claims
            .lock()
            .iter()
            .filter(|(_, claim)| claim.url == url)
            .map(|(hash, _)| hash.clone())
            .collect();
        for hash in hashes {
            self.release(&hash);
        }
    }

    /// Deletes one entry (pingora-cache dropped it from L1: it must not come back from L2).
    pub fn delete(&'static self, url: &str, hash: &str) {
        let key = self.keys.entry(url, hash);
        self.pool.spawn(async move {
            let deleted = self
                .pool
                .run(Operation::Purge, move |mut c| async move {
                    redis::cmd("UNLINK")
                        .arg(key)
                        .query_async::<i64>(&mut c)
                        .await
                })
                .await;
            if let Err(e) = deleted {
                tracing::debug!(error = %e, "shared cache: entry not deleted");
            }
        });
    }

    fn take_claim(&self, hash: &str) -> Option<Claim> {
        let claim = self.claims.lock().remove(hash);
        if claim.is_some() {
            self.claim_count.fetch_sub(1, Ordering::Relaxed);
        }
        claim
    }

    fn spawn_unlock(&'static self, hash: &str, claim: Claim) {
        let lock = self.keys.lock(hash);
        self.pool.spawn(async move {
            let _ = self.unlock(lock, claim.token).await;
        });
    }

    /// The Redis URL without credentials.
    pub fn display_url(&self) -> &str {
        &self.url_for_display
    }

    async fn read(
        &'static self,
        url: &str,
        hash: &str,
    ) -> Result<Option<SharedEntry>, SharedError> {
        let key = self.keys.entry(url, hash);
        let head: Option<Vec<u8>> = self
            .pool
            .run(Operation::Lookup, move |mut c| async move {
                redis::cmd("GET").arg(key).query_async(&mut c).await
            })
            .await?;
        match head {
            Some(head) => self.complete(hash, head).await,
            None => Ok(None),
        }
    }

    /// The entry a head describes, fetching its chunks when it has some.
    async fn complete(
        &'static self,
        hash: &str,
        head: Vec<u8>,
    ) -> Result<Option<SharedEntry>, SharedError> {
        let Ok(head) = entry::decode_head(Bytes::from(head)) else {
            return Ok(None);
        };
        if head.chunks == 0 {
            return Ok(Some(SharedEntry {
                meta: head.meta,
                body: head.inline,
            }));
        }
        let keys: Vec<String> = (0..head.chunks)
            .map(|index| self.keys.chunk(hash, head.generation, index))
            .collect();
        let chunks: Vec<Option<Vec<u8>>> = self
            .pool
            .run(Operation::Lookup, move |mut c| async move {
                redis::cmd("MGET").arg(keys).query_async(&mut c).await
            })
            .await?;
        Ok(entry::assemble(&head, chunks).map(|body| SharedEntry {
            meta: head.meta,
            body,
        }))
    }

    async fn claim(&'static self, url: &str, hash: &str) -> Result<bool, SharedError> {
        let token = format!(
            "{:016x}:{}",
            self.instance,
            self.next_token.fetch_add(1, Ordering::Relaxed)
        );
        let lock = self.keys.lock(hash);
        let millis = millis(self.lock_timeout);
        let value = token.clone();
        let won: Option<String> = self
            .pool
            .run(Operation::Lock, move |mut c| async move {
                redis::cmd("SET")
                    .arg(lock)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if won.is_some() {
            let claim = Claim {
                url: url.to_string(),
                token,
            };
            if self.claims.lock().insert(hash.to_string(), claim).is_none() {
                self.claim_count.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(won.is_some())
    }

    async fn wait_for_fill<T>(
        &'static self,
        url: &str,
        hash: &str,
        local: impl Fn() -> Option<T>,
    ) -> Found<T> {
        let deadline = Instant::now() + self.lock_timeout;
        loop {
            tokio::time::sleep(WAIT_POLL_STEP).await;
            if let Some(found) = local() {
                return Found::Local(found);
            }
            let (key, lock) = (self.keys.entry(url, hash), self.keys.lock(hash));
            let polled: Result<(Option<Vec<u8>>, bool), _> = self
                .pool
                .run(Operation::Wait, move |mut c| async move {
                    redis::pipe()
                        .cmd("GET")
                        .arg(key)
                        .cmd("EXISTS")
                        .arg(lock)
                        .query_async(&mut c)
                        .await
                })
                .await;
            let outcome = match polled {
                Ok((Some(head), _)) => match self.complete(hash, head).await {
                    Ok(Some(entry)) => Some((WaitResult::Filled, Found::Shared(entry))),
                    _ => Some((WaitResult::Released, Found::Nothing)),
                },
                Ok((None, false)) => Some((WaitResult::Released, Found::Nothing)),
                Ok((None, true)) if Instant::now() < deadline => None,
                Ok((None, true)) => Some((WaitResult::TimedOut, Found::Nothing)),
                Err(_) => Some((WaitResult::Released, Found::Nothing)),
            };
            if let Some((result, found)) = outcome {
                SHARED_METRICS.waits[result as usize].inc();
                return found;
            }
        }
    }

    async fn write(
        &'static self,
        key: String,
        hash: &str,
        entry: SharedEntry,
        ttl: Duration,
    ) -> Result<(), SharedError> {
        let generation: u64 = rand::random();
        let (head, chunks) = entry::encode(&entry, self.chunk_size, generation);
        let millis = millis(ttl);
        let chunk_keys: Vec<String> = (0..chunks.len() as u32)
            .map(|index| self.keys.chunk(hash, generation, index))
            .collect();
        self.pool
            .run(Operation::Store, move |mut c| async move {
                let mut pipe = redis::pipe();
                pipe.atomic();
                for (chunk_key, chunk) in chunk_keys.iter().zip(&chunks) {
                    pipe.cmd("SET")
                        .arg(chunk_key)
                        .arg(chunk.as_ref())
                        .arg("PX")
                        .arg(millis)
                        .ignore();
                }
                // Last, so that a reader finding the head finds every chunk.
                pipe.cmd("SET")
                    .arg(key)
                    .arg(head)
                    .arg("PX")
                    .arg(millis)
                    .ignore();
                pipe.query_async::<()>(&mut c).await
            })
            .await
    }

    async fn unlock(&'static self, lock: String, token: String) -> Result<(), SharedError> {
        self.pool
            .run(Operation::Unlock, move |mut c| async move {
                redis::cmd("EVAL")
                    .arg(UNLOCK_SCRIPT)
                    .arg(1)
                    .arg(lock)
                    .arg(token)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(|_| ())
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}
