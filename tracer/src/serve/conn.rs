//! One connection of the HTTP server: who is at its other end, and a write that cannot wait
//! for ever.

use std::{
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

/// The longest a write may wait for the client to read: a client that does not read its
/// answer is let go (idle ones are, by the header read timeout).
const WRITE_STALL: Duration = Duration::from_secs(10);

/// A connection whose writes fail once one has waited [`WRITE_STALL`] for the client to read.
pub struct StallLimit {
    stream: tokio::net::TcpStream,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl StallLimit {
    pub fn new(stream: tokio::net::TcpStream) -> Self {
        Self::with_limit(stream, WRITE_STALL)
    }

    fn with_limit(stream: tokio::net::TcpStream, limit: Duration) -> Self {
        StallLimit {
            stream,
            limit,
            stalled: None,
        }
    }

    /// A pending write: pending still, or an error once it has waited too long.
    fn waited(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl tokio::io::AsyncRead for StallLimit {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for StallLimit {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Pending => self.waited(cx),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The user id of the process at the other end of a loopback connection (`peer` is its
/// address, `local` ours), as `/proc/net/tcp` lists its socket: only a socket of this
/// machine's is listed with its end and ours swapped.
pub fn peer_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let table = if peer.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let text = std::fs::read_to_string(table).ok()?;
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (ours, theirs, uid) = (f.get(1)?, f.get(2)?, f.get(7)?);
        (proc_addr(ours)? == peer && proc_addr(theirs)? == local).then(|| uid.parse().ok())?
    })
}

/// An address as `/proc/net/tcp{,6}` writes it: the IP's 32-bit words in host byte order, in
/// hex, then `:` and the port in hex.
fn proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that stops reading: the server's writes fail once one has waited the limit,
    /// instead of holding the connection and its unsent answer for ever.
    #[test]
    fn a_stalled_write_fails() {
        use tokio::io::AsyncWrite as _;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let mut server = StallLimit::with_limit(server, Duration::from_millis(200));
            let chunk = vec![0u8; 1 << 20];
            let started = std::time::Instant::now();
            let err = loop {
                let written =
                    std::future::poll_fn(|cx| Pin::new(&mut server).poll_write(cx, &chunk)).await;
                if let Err(e) = written {
                    break e;
                }
                assert!(started.elapsed() < Duration::from_secs(20), "never stalled");
            };
            assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
            drop(client);
        });
    }

    #[test]
    fn proc_net_addresses() {
        assert_eq!(
            proc_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            proc_addr("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(proc_addr("zz:1"), None);
    }

    /// A connection of our own, looked up from both ends: our uid.
    #[test]
    fn finds_the_uid_at_the_other_end() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        // SAFETY: getuid has no preconditions.
        let me = unsafe { libc::getuid() };
        assert_eq!(peer_uid(peer, server.local_addr().unwrap()), Some(me));
        drop(client);
    }
}
