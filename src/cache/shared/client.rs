//! The Redis client: a bounded pool of multiplexed connections (each pipelines every
//! operation sent to it), driven on a small runtime of its own so that no request's runtime
//! owns a connection, with a timeout on every operation, a cap on operations in flight and
//! the circuit breaker. Every operation is counted and timed here.

use super::breaker::Breaker;
use super::metrics::{OpResult, Operation, SHARED_METRICS};
use crate::config::SharedCacheConfig;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, RedisResult};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;

/// Operations waiting for Redis at once; past it an operation is skipped, not queued.
const MAX_IN_FLIGHT_OPERATIONS: usize = 1024;
/// A connection attempt longer than this counts as failed (the breaker then takes over).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnection backoff bound: the breaker's probes do the rest.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);
const RECONNECT_TRIES: usize = 1;

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("bad [cache.shared] setting: {0}")]
    Setup(String),
    #[error("the circuit breaker keeps Redis out")]
    BreakerOpen,
    #[error("too many Redis operations in flight")]
    Overloaded,
    #[error("Redis did not answer within the operation timeout")]
    Timeout,
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the Redis task ended early")]
    TaskEnded,
}

pub struct RedisPool {
    client: Client,
    connections: Vec<ConnectionManager>,
    next: AtomicUsize,
    runtime: Runtime,
    timeout: Duration,
    in_flight: Arc<Semaphore>,
    pub breaker: Breaker,
}

impl RedisPool {
    /// The pool and its runtime; connections are made on first use, so a Redis that is
    /// down at start does not stop Parapet.
    pub fn new(config: &SharedCacheConfig) -> Result<RedisPool, SharedError> {
        let client = client(config)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("parapet-redis")
            .enable_all()
            .build()
            .map_err(|e| SharedError::Setup(format!("cannot start the Redis runtime: {e}")))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(RECONNECT_TRIES)
            .set_max_delay(RECONNECT_MAX_DELAY)
            .set_response_timeout(None);
        let connections = {
            let _inside = runtime.enter();
            (0..config.pool_size.max(1))
                .map(|_| {
                    ConnectionManager::new_lazy_with_config(client.clone(), manager_config.clone())
                })
                .collect::<RedisResult<Vec<_>>>()?
        };
        Ok(RedisPool {
            client,
            connections,
            next: AtomicUsize::new(0),
            runtime,
            timeout: config.timeout,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT_OPERATIONS)),
            breaker: Breaker::new(config.breaker_failures, config.breaker_cooldown),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs `task` on the pool's runtime (for work that outlives the request asking for it).
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(task);
    }

    fn connection(&self) -> ConnectionManager {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[index].clone()
    }

    /// Sends one operation (built by `build` on a connection of the pool) unless the breaker
    /// or the in-flight cap keeps it out, and waits at most the operation timeout for it.
    /// The operation runs on the pool's runtime, so the breaker hears how it ended even when
    /// the caller stops waiting.
    pub async fn run<T, Fut>(
        &'static self,
        operation: Operation,
        build: impl FnOnce(ConnectionManager) -> Fut,
    ) -> Result<T, SharedError>
    where
        Fut: Future<Output = RedisResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
            count(operation, OpResult::Skipped);
            return Err(SharedError::Overloaded);
        };
        if !self.breaker.admit(Instant::now()) {
            count(operation, OpResult::Skipped);
            return Err(SharedError::BreakerOpen);
        }
        let future = build(self.connection());
        let timeout = self.timeout;
        let task = self.runtime.spawn(async move {
            let started = Instant::now();
            let outcome = tokio::time::timeout(timeout, future).await;
            drop(permit);
            self.settle(operation, started, outcome)
        });
        task.await.unwrap_or(Err(SharedError::TaskEnded))
    }

    fn settle<T>(
        &self,
        operation: Operation,
        started: Instant,
        outcome: Result<RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, SharedError> {
        let now = Instant::now();
        SHARED_METRICS.durations[operation as usize]
            .observe(now.duration_since(started).as_secs_f64());
        let result = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(SharedError::Redis(e)),
            Err(_) => Err(SharedError::Timeout),
        };
        match &result {
            Ok(_) => {
                count(operation, OpResult::Ok);
                self.breaker.succeeded();
            }
            Err(e) => {
                let kind = if matches!(e, SharedError::Timeout) {
                    OpResult::Timeout
                } else {
                    OpResult::Error
                };
                count(operation, kind);
                if self.breaker.failed(now) {
                    tracing::warn!(error = %e, "shared cache: Redis failing, circuit breaker open");
                }
            }
        }
        SHARED_METRICS.breaker_open.set(i64::from(
            self.breaker.state() != super::BreakerState::Closed,
        ));
        result
    }
}

fn count(operation: Operation, result: OpResult) {
    SHARED_METRICS.operations[operation as usize][result as usize].inc();
}

fn client(config: &SharedCacheConfig) -> Result<Client, SharedError> {
    let mut info = config.url.as_str().into_connection_info()?;
    if let Some(password) = &config.password {
        let settings = info.redis_settings().clone().set_password(&password.0);
        info = info.set_redis_settings(settings);
    }
    match &config.ca_file {
        None => Ok(Client::open(info)?),
        Some(file) => {
            let pem = std::fs::read(file)
                .map_err(|e| SharedError::Setup(format!("cannot read {}: {e}", file.display())))?;
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            Ok(Client::build_with_tls(info, certificates)?)
        }
    }
}
