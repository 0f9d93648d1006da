//! HTTP/3 over QUIC (quinn + h3): one client endpoint, connections opened for the multiplexed
//! set, each request a bidirectional stream read to its end.

use super::multiplexed::Opener;
use super::{tls, Answer, Failure, RequestTemplate};
use crate::load::plan::Target;
use bytes::{Buf, Bytes};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Idle QUIC connections close after this long; the load keeps them busy far more often.
const QUIC_IDLE_TIMEOUT_SECS: u64 = 30;

type H3Sender = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

#[derive(Clone)]
pub struct H3Connection {
    sender: H3Sender,
    quic: quinn::Connection,
}

pub struct H3Opener {
    endpoint: quinn::Endpoint,
    address: SocketAddr,
    server_name: String,
    template: RequestTemplate,
}

impl H3Opener {
    /// Binds the client's UDP socket (any port) and prepares TLS 1.3 with ALPN h3.
    pub fn new(
        address: SocketAddr,
        target: &Target,
        cacert: Option<&Path>,
        template: RequestTemplate,
    ) -> Result<H3Opener, String> {
        let local: SocketAddr = match address {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let mut endpoint =
            quinn::Endpoint::client(local).map_err(|e| format!("QUIC client socket: {e}"))?;
        endpoint.set_default_client_config(quic_config(cacert)?);
        Ok(H3Opener {
            endpoint,
            address,
            server_name: target.host.clone(),
            template,
        })
    }
}

fn quic_config(cacert: Option<&Path>) -> Result<quinn::ClientConfig, String> {
    let tls = tls::client_config(cacert, &[b"h3"])?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| format!("QUIC TLS setup: {e}"))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(Duration::from_secs(QUIC_IDLE_TIMEOUT_SECS))
        .map_err(|e| format!("QUIC idle timeout: {e}"))?;
    transport.max_idle_timeout(Some(idle));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

fn stream_failure(error: h3::error::StreamError) -> Failure {
    match error {
        h3::error::StreamError::RemoteTerminate { .. } => Failure::Closed,
        other => Failure::Protocol(format!("h3: {other}")),
    }
}

impl Opener for H3Opener {
    type Connection = H3Connection;

    async fn open(&self) -> Result<H3Connection, Failure> {
        let connecting = self
            .endpoint
            .connect(self.address, &self.server_name)
            .map_err(|e| Failure::Connect(e.to_string()))?;
        let quic = connecting.await.map_err(|e| match e {
            quinn::ConnectionError::TransportError(error) => Failure::Tls(error.to_string()),
            other => Failure::Connect(other.to_string()),
        })?;
        let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(quic.clone()))
            .await
            .map_err(|e| Failure::Protocol(format!("h3 setup: {e}")))?;
        tokio::spawn(async move {
            let _ = driver.wait_idle().await;
        });
        Ok(H3Connection { sender, quic })
    }

    fn is_closed(connection: &H3Connection) -> bool {
        connection.quic.close_reason().is_some()
    }

    async fn exchange(&self, mut connection: H3Connection) -> Result<Answer, Failure> {
        let request = self.template.absolute(());
        let mut stream = connection
            .sender
            .send_request(request)
            .await
            .map_err(stream_failure)?;
        if !self.template.body.is_empty() {
            stream
                .send_data(self.template.body.clone())
                .await
                .map_err(stream_failure)?;
        }
        stream.finish().await.map_err(stream_failure)?;
        let response = stream.recv_response().await.map_err(stream_failure)?;
        let mut body_bytes = 0u64;
        while let Some(chunk) = stream.recv_data().await.map_err(stream_failure)? {
            body_bytes += chunk.remaining() as u64;
        }
        Ok(Answer {
            status: response.status().as_u16(),
            body_bytes,
        })
    }
}

impl Drop for H3Opener {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"load done");
    }
}
