//! The HTTP/1 server loop: axum's router on hyper connections that close when a
//! client is too slow to send its request head or stays idle between requests
//! (`HTTP_HEADER_TIMEOUT_SECS`), with graceful shutdown. (`axum::serve` has no
//! timeouts: a client sending a byte every few seconds held its connection open
//! forever.) A client that reads nothing of its answers for `answer_timeout` is
//! disconnected too ([`StalledWrites`]), and what hyper answers by itself leaves
//! with the JSON error body ([`JsonParserErrors`]).

use std::{pin::pin, time::Duration};

use axum::{Router, body::Body, extract::ConnectInfo};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::watch};
use tower::ServiceExt;

use super::{parser_errors::JsonParserErrors, stalled_writes::StalledWrites};

/// Serves `router` on `listener` until `shutdown` completes, then waits for the
/// requests in flight to finish (connections stop taking new ones).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    answer_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    // Each connection holds a receiver: when every one is dropped, all are closed.
    let (closing, closing_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        let mut closing_rx = closing_rx.clone();
        tokio::spawn(async move {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let mut connection = pin!(builder.serve_connection(
                TokioIo::new(JsonParserErrors::new(StalledWrites::new(
                    stream,
                    answer_timeout
                ))),
                service,
            ));
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = closing_rx.changed() => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
            drop(closing_rx);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    drop(closing_rx);
    closing.closed().await;
}
