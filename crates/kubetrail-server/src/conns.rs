//! Open connections per source address: at most [`PER_ADDRESS`] at once (IPv6: per /64); one more is closed
//! as soon as it is accepted, before TLS (127/8 counts as one address). Without the cap, one client opening connections and sending nothing
//! (each may wait 30 s for its headers, and be renewed) holds the process's file descriptors until the
//! apiserver's own connections can no longer be accepted: the trail blinded without a single request. Many
//! callers can share an address (an ingress, SNAT), so the cap is wide; the apiserver uses a few connections.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Connections one address (an IPv6 /64) may hold open at once.
pub const PER_ADDRESS: usize = 256;

/// The address a connection counts against: IPv6 per /64, and all of 127/8 as one (every one of those
/// addresses is this host).
fn key(ip: IpAddr) -> IpAddr {
    match crate::throttle::key(ip) {
        IpAddr::V4(v4) if v4.is_loopback() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        other => other,
    }
}

/// The acceptor that counts connections per address, refusing past [`PER_ADDRESS`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Capped {
    open: Table,
}

/// Per address: its open connections, and whether its refusals since it reached the cap were logged (once).
type Table = Arc<Mutex<HashMap<IpAddr, (usize, bool)>>>;

impl<S> axum_server::accept::Accept<TcpStream, S> for Capped {
    type Stream = Counted;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Counted, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let key = match stream.peer_addr() {
            Ok(peer) => key(peer.ip()),
            Err(e) => return std::future::ready(Err(e)),
        };
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (n, logged) = open.entry(key).or_insert((0, false));
        if *n >= PER_ADDRESS {
            if !*logged {
                *logged = true;
                tracing::warn!(address = %key, "refusing connections: {PER_ADDRESS} are open from this address");
            }
            return std::future::ready(Err(io::Error::other("too many connections")));
        }
        *n += 1;
        *logged = false;
        let counted = Counted {
            stream,
            key,
            open: self.open.clone(),
        };
        std::future::ready(Ok((counted, service)))
    }
}

/// A connection, counted against its address until it is closed.
#[derive(Debug)]
pub(crate) struct Counted {
    stream: TcpStream,
    key: IpAddr,
    open: Table,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((n, _)) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
