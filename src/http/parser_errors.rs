//! The service's JSON error body on the answers hyper writes by itself. A request
//! that hyper's parser refuses (a malformed request line or header, a target over
//! its limit, too many headers) never reaches the service: hyper answers it with a
//! status line, `connection: close`, `content-length: 0` and a date, then closes.
//! [`JsonParserErrors`] wraps the connection's socket and puts the service's
//! `{"error": {"code", "message"}}` in place of such an answer as it is written,
//! with a request id as every answer has.
//!
//! Nothing else is touched: every answer of the service's own carries a request id
//! and a content type, so an answer with only those three headers is hyper's.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A socket whose writes pass through, except hyper's own error answers (above).
pub struct JsonParserErrors<T> {
    inner: T,
    /// The answer written in place of hyper's, and how much of it has gone out.
    replacing: Option<(Vec<u8>, usize)>,
}

impl<T> JsonParserErrors<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            replacing: None,
        }
    }
}

impl<T: AsyncWrite + Unpin> JsonParserErrors<T> {
    /// Writes the replacing answer out, then reports hyper's `len` bytes written.
    /// hyper writes the same bytes again after a `Pending`, so the answer is
    /// chosen once and finished across calls.
    fn poll_replacing(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<usize>> {
        if let Some((answer, sent)) = self.replacing.as_mut() {
            while *sent < answer.len() {
                let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*sent..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *sent += n;
            }
        }
        self.replacing = None;
        Poll::Ready(Ok(len))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonParserErrors<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonParserErrors<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none()
            && let Some(answer) = json_answer(buf)
        {
            this.replacing = Some((answer, 0));
        }
        if this.replacing.is_some() {
            return this.poll_replacing(cx, buf.len());
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none() {
            // hyper's answer has no body: it is the one buffer written.
            let mut written = bufs.iter().filter(|b| !b.is_empty());
            if let (Some(only), None) = (written.next(), written.next())
                && let Some(answer) = json_answer(only)
            {
                this.replacing = Some((answer, 0));
            }
        }
        if this.replacing.is_some() {
            let len = bufs.iter().map(|b| b.len()).sum();
            return this.poll_replacing(cx, len);
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The service's answer in place of `written`, if `written` is hyper's answer to a
/// request its parser refused: one of its statuses, and no header but
/// `connection: close`, `content-length: 0` and the date.
fn json_answer(written: &[u8]) -> Option<Vec<u8>> {
    // Cheap checks first: this runs on every answer that is one buffer.
    let rest = written.strip_prefix(b"HTTP/1.1 4")?;
    let (code, message) = match rest.get(..3)? {
        b"00 " => ("bad_request", "the request line or a header is malformed"),
        b"14 " => (
            "uri_too_long",
            "the request target is longer than the server reads",
        ),
        b"31 " => (
            "header_too_large",
            "the request has too many headers, or they are too large",
        ),
        _ => return None,
    };
    let text = std::str::from_utf8(written).ok()?;
    let head = text.strip_suffix("\r\n\r\n")?;
    let (status_line, headers) = head.split_once("\r\n")?;
    let (mut close, mut empty, mut date) = (false, false, None);
    for line in headers.split("\r\n") {
        match line.split_once(": ")? {
            ("connection", "close") => close = true,
            ("content-length", "0") => empty = true,
            ("date", value) => date = Some(value),
            _ => return None,
        }
    }
    if !(close && empty) {
        return None;
    }
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    let mut answer = format!(
        "{status_line}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: {}\r\n",
        body.len(),
        uuid::Uuid::new_v4()
    );
    if let Some(date) = date {
        answer.push_str("date: ");
        answer.push_str(date);
        answer.push_str("\r\n");
    }
    answer.push_str("\r\n");
    answer.push_str(&body);
    Some(answer.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "date: Mon, 07 Dec 2026 23:36:50 GMT\r\n";

    fn hypers(status: &str) -> String {
        format!("HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: 0\r\n{DATE}\r\n")
    }

    #[test]
    fn hypers_answers_get_the_json_error_body() {
        for (status, code) in [
            ("400 Bad Request", "bad_request"),
            ("414 URI Too Long", "uri_too_long"),
            ("431 Request Header Fields Too Large", "header_too_large"),
        ] {
            let answer =
                String::from_utf8(json_answer(hypers(status).as_bytes()).unwrap()).unwrap();
            let (head, body) = answer.split_once("\r\n\r\n").unwrap();
            assert!(
                head.starts_with(&format!("HTTP/1.1 {status}\r\n")),
                "{head}"
            );
            assert!(
                head.contains("\r\ncontent-type: application/json\r\n"),
                "{head}"
            );
            assert!(
                head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())),
                "{head}"
            );
            assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
            assert!(head.contains("\r\nx-request-id: "), "{head}");
            let body: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(body["error"]["code"], code);
            assert!(body["error"]["message"].is_string());
        }
    }

    #[test]
    fn the_services_own_answers_pass_unchanged() {
        let own = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nx-request-id: a\r\ncontent-length: 0\r\n{DATE}\r\n"
        );
        assert!(json_answer(own.as_bytes()).is_none());
        // hyper's shape, but a status it does not answer with by itself.
        assert!(json_answer(hypers("404 Not Found").as_bytes()).is_none());
        assert!(json_answer(hypers("200 OK").as_bytes()).is_none());
        // A body after the head: not an answer hyper wrote alone.
        let with_body = format!("{}{{}}", hypers("400 Bad Request"));
        assert!(json_answer(with_body.as_bytes()).is_none());
        assert!(json_answer(b"").is_none());
    }

    #[tokio::test]
    async fn an_answer_written_in_pieces_goes_out_whole_and_once() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A pipe of 16 bytes: the replacing answer takes many writes, each
        // finished only as the reader takes what the last one left.
        let (client, server) = tokio::io::duplex(16);
        let mut writer = JsonParserErrors::new(server);
        let hypers = hypers("400 Bad Request");
        let write = async move {
            writer.write_all(hypers.as_bytes()).await.unwrap();
            writer.shutdown().await.unwrap();
        };
        let read = async move {
            let mut client = client;
            let mut got = String::new();
            client.read_to_string(&mut got).await.unwrap();
            got
        };
        let ((), got) = tokio::join!(write, read);
        assert_eq!(got.matches("HTTP/1.1 400").count(), 1, "{got}");
        assert!(got.ends_with(r#"{"error":{"code":"bad_request","message":"the request line or a header is malformed"}}"#), "{got}");
    }
}
