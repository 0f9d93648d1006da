//! Parapet's one integration-test binary: the real `parapet` executable, real backends and real
//! clients over 127.0.0.1 on OS-chosen ports. One module per area; `harness` is shared.

mod harness;

mod access_log;
mod admin;
mod balancing;
mod cache;
mod compression;
mod config;
mod connections;
mod deploy;
mod drain;
mod faults;
mod health;
mod hygiene;
mod lifecycle;
mod load;
mod paths;
mod pool;
mod proxy_h1;
mod proxy_h2;
mod proxy_h3;
mod proxy_tls;
mod refusals;
mod reload;
mod routing;
mod shared_cache;
mod slow_clients;
mod upstream_faults;
