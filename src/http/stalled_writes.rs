//! A client that stops reading its answers. hyper's own timeouts cover reading a
//! request head; an answer the client does not read would wait on its socket
//! forever, holding the connection (and the next pipelined requests behind it).
//! [`StalledWrites`] fails a write that makes no progress for a while, and hyper
//! then closes the connection.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

/// A socket whose writes fail once the peer has taken nothing for `limit`.
pub struct StalledWrites<T> {
    inner: T,
    limit: Duration,
    /// Set while a write waits for room in the socket: when it gives up.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> StalledWrites<T> {
    pub fn new(inner: T, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// `polled`, unless the write has been waiting for `limit` (then an error).
    /// The first wait starts the clock; any progress stops it.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of its answer in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StalledWrites<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StalledWrites<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_write_the_peer_never_reads_fails_after_the_limit() {
        let (_peer, socket) = tokio::io::duplex(64);
        let limit = Duration::from_millis(50);
        let mut writer = StalledWrites::new(socket, limit);
        let started = std::time::Instant::now();
        let err = writer.write_all(&[0; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= limit);
    }

    #[tokio::test]
    async fn a_slow_reader_that_keeps_reading_is_served_whole() {
        let (mut peer, socket) = tokio::io::duplex(64);
        let mut writer = StalledWrites::new(socket, Duration::from_secs(2));
        let write = async move { writer.write_all(&[7; 2048]).await };
        // 64 bytes every 100 ms: 3.2 s in all, longer than the limit, but never a
        // pause as long as it.
        let read = async move {
            let mut got = Vec::new();
            let mut buf = [0; 64];
            while got.len() < 2048 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let n = peer.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            got
        };
        let (written, got) = tokio::join!(write, read);
        written.unwrap();
        assert_eq!(got, vec![7; 2048]);
    }
}
