//! Parapet: a reverse proxy, load balancer and edge cache on Pingora.
//!
//! One request's path: a listener (`listen`) accepts HTTP/1.1 or h2c and hands the request to
//! the shared proxy (`proxy`), which finds the route (`route`), picks a server of the route's
//! upstream by its balance and health (`upstream`), forwards the request over a pooled
//! connection with the forwarding headers set (`proxy::headers`), and streams the answer back,
//! compressed for the client when it asks (`compress`; before the edge cache stores it).
//! `config` reads and validates the TOML that drives it all; `control` reloads it; `admin`,
//! `metrics` and `access_log` show operators what happened.

pub mod access_log;
pub mod admin;
pub mod cache;
pub mod compress;
pub mod config;
pub mod control;
pub mod demo;
pub mod listen;
pub mod load;
pub mod metrics;
pub mod proxy;
pub mod route;
pub mod tls;
pub mod upstream;
