// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! The keep-alive pool of idle upstream streams (Parapet patch 19), kept the way nginx keeps
//! them: an idle stream stays registered with the reactor and is simply stored, newest last,
//! under its peer's key. Releasing it and taking it again cost a lock, a push and a pop: no
//! task, channel, `Arc<Mutex>` or allocation per connection. Whether a stored stream is still
//! usable is checked when it is taken (a non-blocking read that only reaches the socket when
//! the reactor has seen it readable: closed, or data the server should not have sent). One
//! sweeper task per pool drops streams past their idle timeout and those the server closed,
//! once a second.

use super::PoolCallback;
use crate::protocols::Stream;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often the sweeper looks for expired or closed idle streams.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

struct Idle {
    stream: Stream,
    since: Instant,
    /// None: kept until evicted, closed by the server or taken.
    expires: Option<Instant>,
}

impl Idle {
    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }
}

#[derive(Default)]
struct Groups {
    by_key: HashMap<u64, VecDeque<Idle>>,
    len: usize,
}

impl Groups {
    /// Removes the oldest idle stream, preferring `key`'s own group, to stay within capacity.
    fn evict_one(&mut self, key: u64) -> Option<Idle> {
        let victim_key = match self.by_key.get(&key) {
            Some(group) if !group.is_empty() => key,
            _ => *self.by_key.iter().find(|(_, g)| !g.is_empty())?.0,
        };
        let group = self.by_key.get_mut(&victim_key)?;
        let idle = group.pop_front()?;
        if group.is_empty() {
            self.by_key.remove(&victim_key);
        }
        self.len -= 1;
        Some(idle)
    }
}

pub(crate) struct IdlePool {
    groups: Mutex<Groups>,
    capacity: usize,
    sweeper_started: AtomicBool,
    /// Shared with the connector: idle streams found holding data the server sent unasked.
    unexpected_data: Arc<AtomicU64>,
}

impl IdlePool {
    pub(crate) fn new(capacity: usize, unexpected_data: Arc<AtomicU64>) -> Self {
        IdlePool {
            groups: Mutex::new(Groups::default()),
            capacity,
            sweeper_started: AtomicBool::new(false),
            unexpected_data,
        }
    }

    /// Stores an idle stream under `key`; past capacity the oldest idle stream is closed.
    pub(crate) fn put(
        self: &Arc<Self>,
        key: u64,
        stream: Stream,
        idle_timeout: Option<Duration>,
        on_evict: Option<&PoolCallback>,
    ) {
        if self.capacity == 0 || idle_timeout.is_some_and(|t| t.is_zero()) {
            return;
        }
        self.start_sweeper();
        let now = Instant::now();
        let idle = Idle {
            stream,
            since: now,
            expires: idle_timeout.map(|t| now + t),
        };
        let evicted = {
            let mut groups = self.groups.lock();
            let evicted = if groups.len >= self.capacity {
                groups.evict_one(key)
            } else {
                None
            };
            groups.by_key.entry(key).or_default().push_back(idle);
            groups.len += 1;
            evicted
        };
        if let (Some(evicted), Some(callback)) = (evicted, on_evict) {
            callback(evicted.since.elapsed());
        }
    }

    /// The most recently stored idle stream of `key` that is still usable; the others met on
    /// the way (expired, closed by the server) are closed.
    pub(crate) fn take(&self, key: u64) -> Option<Stream> {
        loop {
            let idle = {
                let mut groups = self.groups.lock();
                let group = groups.by_key.get_mut(&key)?;
                let idle = group.pop_back();
                if group.is_empty() {
                    groups.by_key.remove(&key);
                }
                let idle = idle?;
                groups.len -= 1;
                idle
            };
            let expired = idle.expired(Instant::now());
            let mut stream = idle.stream;
            if !expired && super::test_reusable_stream(&mut stream, &self.unexpected_data)
            {
                return Some(stream);
            }
        }
    }

    /// Closes the idle streams past their timeout and those the server closed (or sent data
    /// on). The checks are non-blocking polls; the streams are closed outside the lock.
    fn sweep(&self) {
        let now = Instant::now();
        let mut closed = Vec::new();
        {
            let mut groups = self.groups.lock();
            let Groups { by_key, len } = &mut *groups;
            by_key.retain(|_, group| {
                let mut i = 0;
                while i < group.len() {
                    let usable = !group[i].expired(now)
                        && super::test_reusable_stream(
                            &mut group[i].stream,
                            &self.unexpected_data,
                        );
                    if usable {
                        i += 1;
                    } else if let Some(idle) = group.remove(i) {
                        closed.push(idle);
                        *len -= 1;
                    }
                }
                !group.is_empty()
            });
        }
        drop(closed);
    }

    /// One sweeper per pool, on the runtime of the first release; it ends with the pool.
    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeper_started.load(Ordering::Relaxed)
            || self.sweeper_started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let pool: Weak<IdlePool> = Arc::downgrade(self);
        pingora_runtime::current_handle().spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_INTERVAL).await;
                let Some(pool) = pool.upgrade() else { return };
                pool.sweep();
            }
        });
    }
}
