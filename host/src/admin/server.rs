//! The listening socket and its accept loop, a task on ferry's runtime: each
//! connection under the limit becomes a task of its own. At the limit a new
//! connection takes the place of the one idle longest (no request in progress):
//! clients that connect and send nothing, however many, cannot lock out a liveness
//! probe or a metrics scrape. Only when every connection is answering a request is
//! the new one closed at once.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::AdminState;
use super::connection::{self, Connections};
use super::limits::{ACCEPT_BACKOFF, EVICTION_WAIT, MAX_CONNECTIONS};
use super::request::Served;
use crate::runtime::Runtime;

/// A running admin server; it stops accepting when dropped, and its connections
/// close once their requests in progress are answered.
pub struct AdminServer {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    accept: Option<JoinHandle<()>>,
    runtime: Runtime,
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        // Off the runtime, wait for the listener to close so the port is free when
        // this returns; on it, blocking is not allowed and the task ends on its own.
        if let Some(accept) = self.accept.take()
            && tokio::runtime::Handle::try_current().is_err()
        {
            let _ = self.runtime.block_on(accept);
        }
    }
}

/// Starts serving `state` on `listen`, on the runtime of `state.sandbox`.
pub fn serve(listen: &str, state: Arc<AdminState>) -> anyhow::Result<AdminServer> {
    let runtime = state.sandbox.runtime().clone();
    let listener =
        std::net::TcpListener::bind(listen).with_context(|| format!("failed to bind the admin server to {listen}"))?;
    let addr = listener.local_addr().context("admin server is not on an IP socket")?;
    listener.set_nonblocking(true).context("failed to make the admin socket non-blocking")?;
    let listener = {
        let _entered = runtime.handle().enter();
        TcpListener::from_std(listener).context("failed to register the admin socket with the runtime")?
    };
    let (stop, stopped) = watch::channel(false);
    let served = Arc::new(Served::new(state, runtime.clone()));
    let accept = runtime.handle().spawn(accept_loop(listener, served, stopped));
    tracing::info!(%addr, "admin server listening");
    Ok(AdminServer { addr, stop, accept: Some(accept), runtime })
}

async fn accept_loop(listener: TcpListener, served: Arc<Served>, mut stop: watch::Receiver<bool>) {
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = Arc::new(Connections::default());
    let mut refusing = false;
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                tracing::warn!(%error, "the admin server failed to accept a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let place = match places.clone().try_acquire_owned() {
            Ok(place) => Some(place),
            // At the limit: the connection idle longest closes and gives its place
            // (its task ends at once, so this waits only for the runtime to run it).
            Err(_) if connections.evict_idlest() => {
                tokio::time::timeout(EVICTION_WAIT, places.clone().acquire_owned()).await.ok().and_then(Result::ok)
            }
            Err(_) => None,
        };
        let Some(place) = place else {
            if !refusing {
                refusing = true;
                tracing::warn!(
                    limit = MAX_CONNECTIONS,
                    "admin connections at the limit, each answering a request: new ones are closed at once until \
                     one ends"
                );
            }
            served.traffic.refused_connection();
            drop(stream);
            continue;
        };
        refusing = false;
        let _ = stream.set_nodelay(true);
        let entry = connections.register();
        tokio::spawn(connection::serve(stream, place, entry, served.clone(), stop.clone()));
    }
}
