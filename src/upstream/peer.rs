//! The Pingora peer for one try: the server's address and TLS, the upstream's timeouts.

use super::Upstream;
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::time::Duration;

impl Upstream {
    /// The peer for one try at server `index`, with the upstream's timeouts and the server's
    /// TLS (SNI, optional CA, h2 when the server offers it by ALPN).
    pub fn peer(&self, index: usize, address: SocketAddr) -> HttpPeer {
        let config = &self.config;
        let tls = config.servers.get(index).and_then(|s| s.tls.as_ref());
        let mut peer = HttpPeer::new(
            address,
            tls.is_some(),
            tls.map(|t| t.sni.clone()).unwrap_or_default(),
        );
        if tls.is_some() {
            peer.options.alpn = pingora::protocols::ALPN::H2H1;
            peer.options.ca = self.trusted_ca.get(index).cloned().flatten();
        }
        peer.options.connection_timeout = Some(config.connect_timeout);
        peer.options.read_timeout = Some(config.read_timeout);
        peer.options.write_timeout = Some(config.write_timeout);
        // keepalive = 0 turns reuse off: a pooled connection with no idle time is closed at once.
        peer.options.idle_timeout = Some(if config.keepalive == 0 {
            Duration::ZERO
        } else {
            config.idle_timeout
        });
        peer
    }
}
