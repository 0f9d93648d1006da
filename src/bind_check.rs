//! Before the proxy starts: every address it must listen on (each listener's TCP port, its UDP
//! port for HTTP/3, the admin port) can be bound, so a port another process holds is reported
//! as `FILE:LINE:listener[N].address: ADDRESS: address in use` and the process exits at once.
//!
//! Each address is bound and released again here; Pingora binds it for good a moment later.

use crate::config::{Config, KeyPath};
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};

/// `Err` with the located message of the first address that cannot be bound.
pub fn addresses_free(config: &Config) -> Result<(), String> {
    for (index, listener) in config.listeners.iter().enumerate() {
        let path = KeyPath::root().key("listener").index(index).key("address");
        let located = |e: io::Error| describe(config, &path, listener.address, &e);
        TcpListener::bind(listener.address).map_err(located)?;
        if listener.h3 {
            UdpSocket::bind(listener.address).map_err(located)?;
        }
    }
    if let Some(admin) = &config.admin {
        let path = KeyPath::root().key("admin").key("listen");
        TcpListener::bind(admin.listen).map_err(|e| describe(config, &path, admin.listen, &e))?;
    }
    Ok(())
}

fn describe(config: &Config, path: &KeyPath, address: SocketAddr, e: &io::Error) -> String {
    let why = match e.kind() {
        io::ErrorKind::AddrInUse => "address in use (another process listens there)".to_string(),
        io::ErrorKind::AddrNotAvailable => "address not available on this machine".to_string(),
        io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)".to_string()
        }
        _ => e.to_string(),
    };
    format!("{}: {address}: {why}", config.location_of(path))
}
