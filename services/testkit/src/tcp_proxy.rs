//! A TCP forwarder whose backend can be switched: stands in for a
//! Kubernetes Service in front of several replicas.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use tokio::net::{TcpListener, TcpStream};

/// Forwards connections on its own port to the current backend port.
pub struct TcpProxy {
    port: u16,
    backend: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a spare port, forwarding to `backend`.
    pub async fn start(backend: u16) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let target = Arc::new(AtomicU16::new(backend));
        let for_task = target.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let backend = for_task.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", backend)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(Self {
            port,
            backend: target,
            task,
        })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sends new connections to `backend` from now on.
    pub fn switch_to(&self, backend: u16) {
        self.backend.store(backend, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
