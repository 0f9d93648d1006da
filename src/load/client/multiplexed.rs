//! A fixed set of multiplexed connections (HTTP/2, HTTP/3), opened on first use, reopened when
//! closed, and taken round robin: each request becomes a stream on one of them.

use super::{Answer, Failure};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// How one protocol opens a connection and runs an exchange on it.
pub trait Opener: Send + Sync {
    /// A cheap handle to an open connection (cloned per request).
    type Connection: Clone + Send + Sync;

    fn open(&self) -> impl Future<Output = Result<Self::Connection, Failure>> + Send;

    fn is_closed(connection: &Self::Connection) -> bool;

    /// Sends the request on a new stream and reads the whole response.
    fn exchange(
        &self,
        connection: Self::Connection,
    ) -> impl Future<Output = Result<Answer, Failure>> + Send;
}

pub struct Multiplexed<O: Opener> {
    opener: O,
    slots: Vec<tokio::sync::Mutex<Option<O::Connection>>>,
    next: AtomicUsize,
}

impl<O: Opener> Multiplexed<O> {
    pub fn new(opener: O, connections: usize) -> Self {
        Multiplexed {
            opener,
            slots: (0..connections.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    pub async fn send(&self, sent_at: &mut Option<Instant>) -> Result<Answer, Failure> {
        // Nothing the generator limits stands between a due request and its stream: waiting
        // for a connection being opened is what any client of this server would wait.
        *sent_at = Some(Instant::now());
        let connection = self.connection().await?;
        self.opener.exchange(connection).await
    }

    /// The next slot's connection, opened (or reopened) first when needed; requests arriving
    /// at a slot while it opens wait for that connection rather than opening more.
    async fn connection(&self) -> Result<O::Connection, Failure> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[index].lock().await;
        if let Some(open) = slot.as_ref().filter(|c| !O::is_closed(c)) {
            return Ok(open.clone());
        }
        let opened = self.opener.open().await?;
        *slot = Some(opened.clone());
        Ok(opened)
    }
}
