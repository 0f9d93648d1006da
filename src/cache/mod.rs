//! The edge cache: pingora-cache driven by Parapet's RFC 9111 policy (`policy`, with HTTP dates
//! read by `dates`), keyed by scheme, host, port, path and query (`key`), stored in moka (`store`,
//! each response an `entry`; entries being filled in `fill`, their bodies in `fill_buffer`),
//! with misses for one key coalesced by pingora's cache lock.
//! The origin's representation is stored once; the other codings clients negotiate are derived
//! from it and kept beside it (`variants`). `request` is one request's part in it, phase by
//! phase; `ranges` serves byte ranges of a stored partial response; `status` renders RFC 9211
//! `Cache-Status`; `metrics` holds the cache's metric handles.
//! `shared` is the optional second tier on Redis, shared by several instances: the store
//! looks there on a miss and writes complete fills there; purges go through it to every
//! instance. `edge` holds the process-wide parts (the store and the lock) and the purges.

pub mod dates;
mod edge;
mod entry;
mod fill;
mod fill_buffer;
pub mod key;
pub mod metrics;
pub mod policy;
pub mod ranges;
pub mod request;
pub mod shared;
pub mod status;
pub mod store;
mod variants;

pub use edge::{get, init, purge, refresh_gauges, EdgeCache};
pub use key::normalize_url;
pub use request::RequestCache;
