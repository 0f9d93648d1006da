//! Purges across instances: what one purge names (a URL with all its variants, a prefix, a
//! glob), the message every instance receives on the purge channel, and the subscriber that
//! applies received purges to this instance's L1, reconnecting when Redis goes away.

use super::metrics::SHARED_METRICS;
use super::SharedTier;
use crate::cache::policy::glob_matches;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Wait before subscribing again after the subscription broke or could not be made.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(250);

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
