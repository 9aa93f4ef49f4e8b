//! A TCP forwarder whose backend can be switched: stands in for a
//! Kubernetes Service in front of several replicas, and for a peer that
//! vanishes without closing its connections.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Connections that stopped forwarding but stay open.
type Held = Arc<Mutex<Vec<(TcpStream, TcpStream)>>>;

/// Forwards connections on its own port to the current backend port.
pub struct TcpProxy {
    port: u16,
    backend: Arc<AtomicU16>,
    freeze: Arc<Notify>,
    held: Held,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a spare port, forwarding to `backend`.
    pub async fn start(backend: u16) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let target = Arc::new(AtomicU16::new(backend));
        let freeze = Arc::new(Notify::new());
        let held: Held = Arc::default();
        let (for_task, freeze_for_task, held_for_task) =
            (target.clone(), freeze.clone(), held.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let backend = for_task.load(Ordering::SeqCst);
                let (freeze, held) = (freeze_for_task.clone(), held_for_task.clone());
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", backend)).await else {
                        return;
                    };
                    let frozen = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                        () = freeze.notified() => true,
                    };
                    if frozen && let Ok(mut held) = held.lock() {
                        held.push((inbound, outbound));
                    }
                });
            }
        });
        Ok(Self {
            port,
            backend: target,
            freeze,
            held,
            task,
        })
    }

    /// Every open connection stops forwarding in both directions but stays
    /// open, as if its peer had vanished without a FIN or RST (a deleted
    /// pod): commands on it time out. New connections forward as before.
    pub fn freeze_open_connections(&self) {
        self.freeze.notify_waiters();
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
        if let Ok(mut held) = self.held.lock() {
            held.clear();
        }
    }
}
