//! A TCP proxy in front of PostgreSQL, for outages on demand.

use sqlx::{ConnectOptions, PgPool};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// A TCP proxy in front of PostgreSQL that fails the way networks and databases do:
/// `cut` drops every live connection and resets new ones (a crash or restart); `stall`
/// holds every byte in both directions (a partition or a frozen host); `blackhole` loses
/// every byte, of live connections and of those opened meanwhile, which stay lost for good
/// (a failover whose old host vanished: the sockets stay open and nothing answers);
/// `restore` heals any of them for new connections, and delivers bytes held by a stall.
pub struct DbProxy {
    pub port: u16,
    state: Arc<Mutex<ProxyState>>,
    flowing: watch::Sender<bool>,
    acceptor: JoinHandle<()>,
}

#[derive(Default)]
struct ProxyState {
    cut: bool,
    blackhole: bool,
    links: Vec<Link>,
}

struct Link {
    task: AbortHandle,
    /// Set when the link's bytes are lost from then on.
    lost: Arc<AtomicBool>,
}

#[derive(Clone, Copy, Debug)]
pub enum Fault {
    Cut,
    Stall,
    Blackhole,
}

impl DbProxy {
    pub async fn start(upstream: (String, u16)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let (flowing, flow) = watch::channel(true);
        let shared = state.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut state = shared.lock().unwrap();
                if state.cut {
                    let _ = inbound.set_zero_linger();
                    continue;
                }
                let (upstream, flow) = (upstream.clone(), flow.clone());
                let lost = Arc::new(AtomicBool::new(state.blackhole));
                let task = tokio::spawn({
                    let lost = lost.clone();
                    async move {
                        let Ok(outbound) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let (client_read, client_write) = inbound.into_split();
                        let (server_read, server_write) = outbound.into_split();
                        tokio::join!(
                            pump(client_read, server_write, flow.clone(), lost.clone()),
                            pump(server_read, client_write, flow, lost),
                        );
                    }
                });
                state.links.retain(|link| !link.task.is_finished());
                state.links.push(Link {
                    task: task.abort_handle(),
                    lost,
                });
            }
        });
        Self {
            port,
            state,
            flowing,
            acceptor,
        }
    }

    pub fn fail(&self, fault: Fault) {
        match fault {
            Fault::Cut => {
                let mut state = self.state.lock().unwrap();
                state.cut = true;
                for link in state.links.drain(..) {
                    link.task.abort();
                }
            }
            Fault::Stall => {
                self.flowing.send_replace(false);
            }
            Fault::Blackhole => {
                let mut state = self.state.lock().unwrap();
                state.blackhole = true;
                for link in &state.links {
                    link.lost.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    pub fn restore(&self) {
        let mut state = self.state.lock().unwrap();
        state.cut = false;
        state.blackhole = false;
        self.flowing.send_replace(true);
    }

    /// The per-test database's URL, reached through the proxy.
    pub fn url_for(&self, pool: &PgPool) -> String {
        let mut url = pool.connect_options().to_url_lossy();
        url.set_host(Some("127.0.0.1")).expect("a host");
        url.set_port(Some(self.port)).expect("a port");
        url.to_string()
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.fail(Fault::Cut);
        self.acceptor.abort();
    }
}

/// Copies one direction of a link, holding each chunk while the proxy is stalled, and
/// dropping every chunk once the link is lost.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut flow: watch::Receiver<bool>,
    lost: Arc<AtomicBool>,
) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if lost.load(Ordering::Relaxed) {
            continue;
        }
        let open = flow.wait_for(|flowing| *flowing).await.is_ok();
        if !open || to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
