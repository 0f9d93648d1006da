//! Purges across instances: what one purge names (a URL with all its variants, a prefix, a
//! glob), deleting it from Redis and publishing it on the purge channel, the subscriber that
//! applies received purges to this instance's L1 (reconnecting when Redis goes away), and the
//! purges Redis did not take.
//!
//! A purge made while this instance cannot reach Redis has only emptied this instance's L1:
//! Redis and the other instances still hold what it names. It is kept (deduplicated, at most
//! `MAX_PENDING_PURGES`, oldest dropped first) and sent again every `PURGE_RETRY_INTERVAL`
//! until Redis takes it, so it reaches them late rather than never; counted in
//! `parapet_cache_shared_purges_{deferred,pending,dropped}` and logged with what to do.

use super::client::SharedError;
use super::metrics::{Operation, SHARED_METRICS};
use super::SharedTier;
use crate::cache::policy::glob_matches;
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use redis::RedisResult;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Wait before subscribing again after the subscription broke or could not be made.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(250);
/// Keys asked for per `SCAN` step of a purge.
const PURGE_SCAN_COUNT: usize = 500;
/// Purges kept for a Redis that did not take them; past it the oldest is dropped.
const MAX_PENDING_PURGES: usize = 1000;
/// Between two tries of the purges Redis did not take.
const PURGE_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// What a purge removes: every stored URL matching any of the given forms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeRequest {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub glob: Option<String>,
}

impl PurgeRequest {
    pub fn matches(&self, url: &str) -> bool {
        self.url.as_deref().is_some_and(|exact| url == exact)
            || self.prefix.as_deref().is_some_and(|p| url.starts_with(p))
            || self.glob.as_deref().is_some_and(|g| glob_matches(g, url))
    }

    /// Literal starts of the stored URLs it can match, for `SCAN MATCH` (the exact URL is
    /// followed by the space that ends it in an entry key).
    pub fn scan_literals(&self) -> Vec<String> {
        let exact = self.url.as_ref().map(|url| format!("{url} "));
        let glob = self
            .glob
            .as_deref()
            .map(|g| super::entry::literal_prefix_of_glob(g).to_string());
        exact
            .into_iter()
            .chain(self.prefix.clone())
            .chain(glob)
            .collect()
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(text: &[u8]) -> Option<PurgeRequest> {
        serde_json::from_slice(text).ok()
    }
}

impl SharedTier {
    /// Deletes matching entries from Redis, then tells every instance (this one too, so an
    /// L1 refilled from L2 meanwhile is emptied again) to purge its L1. Returns at once; when
    /// Redis does not take it, it is kept and sent again until it does.
    pub fn purge(&'static self, purge: PurgeRequest) {
        self.pool.spawn(async move {
            if let Err(e) = self.send_purge(&purge).await {
                self.pending_purges.defer(purge, &e);
            }
        });
    }

    async fn send_purge(&'static self, purge: &PurgeRequest) -> Result<(), SharedError> {
        for literal in purge.scan_literals() {
            self.delete_matching(&literal, purge).await?;
        }
        let channel = self.keys.purge_channel();
        let message = purge.encode();
        self.pool
            .run(Operation::Publish, move |mut c| async move {
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(message)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(|_| ())
    }

    /// Deletes every entry head whose key starts with `literal` and whose URL `purge`
    /// matches. Chunks are left to their TTL: without their head nothing reads them.
    async fn delete_matching(
        &'static self,
        literal: &str,
        purge: &PurgeRequest,
    ) -> Result<(), SharedError> {
        let pattern = self.keys.entries_starting_with(literal);
        let mut cursor: u64 = 0;
        loop {
            let pattern = pattern.clone();
            let (next, found): (u64, Vec<String>) = self
                .pool
                .run(Operation::Purge, move |c| scan_step(c, cursor, pattern))
                .await?;
            let doomed: Vec<String> = found
                .into_iter()
                .filter(|key| self.keys.url_of(key).is_some_and(|url| purge.matches(url)))
                .collect();
            if !doomed.is_empty() {
                self.pool
                    .run(Operation::Purge, move |mut c| async move {
                        redis::cmd("UNLINK")
                            .arg(doomed)
                            .query_async::<i64>(&mut c)
                            .await
                    })
                    .await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Sends the kept purges, oldest first, until one fails (Redis is still out of reach).
    async fn retry_pending(&'static self) {
        while let Some(pending) = self.pending_purges.oldest() {
            if self.send_purge(&pending.purge).await.is_err() {
                return;
            }
            self.pending_purges.sent(&pending.purge);
            tracing::info!(
                purge = ?pending.purge,
                late_ms = u64::try_from(pending.since.elapsed().as_millis()).unwrap_or(u64::MAX),
                "shared cache: a purge kept while Redis was out of reach has now reached Redis and the other instances"
            );
        }
    }
}

async fn scan_step(
    mut connection: ConnectionManager,
    cursor: u64,
    pattern: String,
) -> RedisResult<(u64, Vec<String>)> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(PURGE_SCAN_COUNT)
        .query_async(&mut connection)
        .await
}

/// A purge Redis did not take, and since when it waits.
#[derive(Clone)]
pub(super) struct Pending {
    purge: PurgeRequest,
    since: Instant,
}

/// The purges made here that Redis did not take yet, oldest first.
#[derive(Default)]
pub(super) struct PendingPurges {
    queue: Mutex<VecDeque<Pending>>,
}

impl PendingPurges {
    /// Keeps `purge` for a later try (once: a purge already waiting covers it again), dropping
    /// the oldest past `MAX_PENDING_PURGES`.
    fn defer(&self, purge: PurgeRequest, error: &SharedError) {
        SHARED_METRICS.purges_deferred.inc();
        let mut queue = self.queue.lock();
        if queue.iter().any(|pending| pending.purge == purge) {
            return;
        }
        tracing::warn!(
            ?purge,
            %error,
            "shared cache: purge applied to this instance only, Redis is out of reach; \
             Redis and the other instances keep serving what it names until it is sent again \
             (every second, until Redis answers: see parapet_cache_shared_purges_pending) \
             or until it expires; if that cannot wait, send the purge to the other instances' \
             admin listeners too"
        );
        if queue.len() >= MAX_PENDING_PURGES {
            if let Some(dropped) = queue.pop_front() {
                SHARED_METRICS.purges_dropped.inc();
                tracing::error!(
                    purge = ?dropped.purge,
                    "shared cache: purge dropped, more than {MAX_PENDING_PURGES} wait for Redis; \
                     it will never reach Redis or the other instances: send it again once Redis answers"
                );
            }
        }
        queue.push_back(Pending {
            purge,
            since: Instant::now(),
        });
        SHARED_METRICS.purges_pending.set(gauge_value(queue.len()));
    }

    fn oldest(&self) -> Option<Pending> {
        self.queue.lock().front().cloned()
    }

    /// Forgets `purge` once Redis took it (it may have been dropped meanwhile).
    fn sent(&self, purge: &PurgeRequest) {
        let mut queue = self.queue.lock();
        if let Some(index) = queue.iter().position(|pending| &pending.purge == purge) {
            queue.remove(index);
        }
        SHARED_METRICS.purges_pending.set(gauge_value(queue.len()));
    }
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Sends the purges Redis did not take, every `PURGE_RETRY_INTERVAL`, for as long as the
/// process lives.
pub(super) async fn retry_pending_forever(tier: &'static SharedTier) {
    loop {
        tokio::time::sleep(PURGE_RETRY_INTERVAL).await;
        tier.retry_pending().await;
    }
}

/// Listens on the purge channel for as long as the process lives.
pub(super) async fn subscribe_forever(tier: &'static SharedTier) {
    let channel = tier.keys.purge_channel();
    loop {
        if let Err(e) = listen(tier, &channel).await {
            tracing::debug!(error = %e, "shared cache: purge subscription lost");
        }
        SHARED_METRICS.subscribed.set(0);
        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
    }
}

async fn listen(tier: &'static SharedTier, channel: &str) -> redis::RedisResult<()> {
    let mut pubsub = tier.pool.client().get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    SHARED_METRICS.subscribed.set(1);
    let mut messages = std::pin::pin!(pubsub.on_message());
    while let Some(message) =
        std::future::poll_fn(|cx| futures_core::Stream::poll_next(messages.as_mut(), cx)).await
    {
        match PurgeRequest::decode(message.get_payload_bytes()) {
            Some(purge) => {
                SHARED_METRICS.purges_received.inc();
                let purged = (tier.on_purge)(&purge);
                tracing::debug!(?purge, purged, "shared cache: purge received");
            }
            None => tracing::debug!("shared cache: unreadable purge message ignored"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_survives_the_channel_and_matches_like_the_local_one() {
        let purge = PurgeRequest {
            prefix: Some("http://a.test:80/img/".into()),
            glob: Some("http://b.test:80/*.css".into()),
            ..PurgeRequest::default()
        };
        let received = PurgeRequest::decode(purge.encode().as_bytes()).expect("decodes");
        assert_eq!(received, purge);
        assert!(received.matches("http://a.test:80/img/1.png"));
        assert!(received.matches("http://b.test:80/site.css"));
        assert!(!received.matches("http://a.test:80/index.html"));
    }

    fn url_purge(n: usize) -> PurgeRequest {
        PurgeRequest {
            url: Some(format!("http://a.test:80/{n}")),
            ..PurgeRequest::default()
        }
    }

    fn waiting(pending: &PendingPurges) -> Vec<PurgeRequest> {
        pending
            .queue
            .lock()
            .iter()
            .map(|p| p.purge.clone())
            .collect()
    }

    #[test]
    fn a_purge_redis_did_not_take_waits_once_and_goes_when_sent() {
        let pending = PendingPurges::default();
        pending.defer(url_purge(1), &SharedError::Timeout);
        pending.defer(url_purge(2), &SharedError::Timeout);
        pending.defer(url_purge(1), &SharedError::Timeout);
        assert_eq!(waiting(&pending), [url_purge(1), url_purge(2)]);
        assert_eq!(pending.oldest().map(|p| p.purge), Some(url_purge(1)));
        pending.sent(&url_purge(2));
        pending.sent(&url_purge(1));
        assert!(pending.oldest().is_none());
    }

    #[test]
    fn past_the_bound_the_oldest_waiting_purge_is_dropped() {
        let pending = PendingPurges::default();
        for n in 0..=MAX_PENDING_PURGES {
            pending.defer(url_purge(n), &SharedError::BreakerOpen);
        }
        let kept = waiting(&pending);
        assert_eq!(kept.len(), MAX_PENDING_PURGES);
        assert_eq!(kept.first(), Some(&url_purge(1)));
        assert_eq!(kept.last(), Some(&url_purge(MAX_PENDING_PURGES)));
    }

    #[test]
    fn scan_literals_cover_every_form() {
        let purge = PurgeRequest {
            url: Some("http://a.test:80/x".into()),
            prefix: Some("http://a.test:80/y/".into()),
            glob: Some("http://a.test:80/z/*.js".into()),
        };
        assert_eq!(
            purge.scan_literals(),
            [
                "http://a.test:80/x ",
                "http://a.test:80/y/",
                "http://a.test:80/z/"
            ]
        );
    }
}
