//! A TCP relay a test can cut and mend on the same port: a network partition between one
//! client (say, one Parapet instance) and a server every other client still reaches.

use super::ports::{fresh_listener, rebind, ServerTasks};
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};

pub struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    tasks: ServerTasks,
}

impl Relay {
    /// Relays every connection made to [`Relay::addr`] to `target`.
    pub fn start(target: SocketAddr) -> Relay {
        let (listener, addr) = fresh_listener();
        let relay = Relay {
            addr,
            target,
            tasks: ServerTasks::default(),
        };
        relay.accept(listener);
        relay
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every relayed connection and refuses new ones; returns once they are closed.
    pub async fn cut(&self) {
        self.tasks.stop().await;
    }

    /// Relays again, on the same port.
    pub async fn mend(&self) {
        self.accept(rebind(self.addr).await);
    }

    fn accept(&self, listener: TcpListener) {
        let target = self.target;
        self.tasks.accept(listener, move |mut client| async move {
            if let Ok(mut server) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
    }
}
