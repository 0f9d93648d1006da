//! Parapet: a reverse proxy, load balancer and edge cache on Pingora.
//!
//! One request's path: a door of `listen` accepts HTTP/1.1, h2c, h2 over TLS (`tls` picks the
//! certificate by SNI) or HTTP/3 over QUIC, and hands the request to the one shared proxy
//! (`proxy`). Its phases, in Pingora's order: admit the request (`validate_request` checks it as
//! the RFCs demand, then size limits, the path in normal form from `target_path`, the route
//! from `route`, the request id), let the edge cache answer (`cache`), pick a server of the route's
//! upstream by balance and health and retry safely (`upstream`), forward it with the
//! forwarding headers (`proxy::headers`), and stream the answer back, compressed when the
//! client asks (`compress`, before the cache stores it). Answers Parapet makes itself, and
//! the status a failure gets, are decided in `refusal`; `fields` reads the HTTP fields every
//! layer shares.
//!
//! Around it: `server` boots the process (services, signal handling, the drain; `signals`
//! holds signals from the first instant), `config` reads and validates the TOML that drives it
//! all, `control` reloads it, and `admin`, `metrics` (the registry; each module keeps its own
//! handles) and `access_log` show operators what happened.
//! `demo` runs built-in origins for `parapet demo`.

pub mod access_log;
pub mod admin;
pub mod bind_check;
pub mod cache;
pub mod compress;
pub mod config;
pub mod control;
pub mod demo;
pub mod fields;
pub mod listen;
pub mod load;
pub mod metrics;
pub mod probe;
pub mod proxy;
pub mod refusal;
pub mod route;
pub mod server;
pub mod signals;
pub mod target_path;
pub mod tls;
pub mod upstream;
pub mod validate_request;
