//! Slow and oversized clients: a request head or body that does not arrive in
//! time, an idle kept-alive connection, a body over the limit. Each is cut off
//! without waiting for the client.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{AppSpec, TestApp, spawn_app_with, standard_tenants};

async fn app_with_timeouts() -> TestApp {
    spawn_app_with(
        AppSpec::new(standard_tenants())
            .env("HTTP_HEADER_TIMEOUT_SECS", "1")
            .env("HTTP_BODY_TIMEOUT_SECS", "1"),
    )
    .await
}

#[tokio::test]
async fn a_request_past_its_deadline_gets_503_timeout_even_while_its_body_keeps_coming() {
    let app = spawn_app_with(
        AppSpec::new(standard_tenants())
            .env("HTTP_REQUEST_TIMEOUT_SECS", "1")
            .env("HTTP_BODY_TIMEOUT_SECS", "3"),
    )
    .await;
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /api/products HTTP/1.1\r\nHost: localhost\r\nX-Tenant-ID: demo\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":",
        )
        .await
        .unwrap();
    // A byte every 100 ms: never idle long enough for the body timeout, but the
    // whole request runs past its 1 s deadline.
    let (mut reader, mut writer) = stream.split();
    let trickle = async {
        for _ in 0..200 {
            if writer.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the server kept reading a request for 20 s");
    };
    let answer = async {
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
            if received.windows(4).any(|w| w == b"\r\n\r\n") && received.ends_with(b"}}") {
                break;
            }
        }
        String::from_utf8_lossy(&received).into_owned()
    };
    let answer = tokio::select! {
        () = trickle => unreachable!(),
        answer = answer => answer,
    };
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"timeout\""), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
}

#[tokio::test]
async fn requests_the_parser_refuses_get_the_json_error_and_the_server_goes_on() {
    let app = app_with_timeouts().await;
    let too_many_headers: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    for (request, status, code) in [
        (
            "GET /health HTTP/1.1\r\nHost: localhost\r\nBad Header: y\r\n\r\n".to_string(),
            "400",
            "bad_request",
        ),
        (
            "GET /health HTTP/1.1\r\nHost: localhost\r\n\0\r\n\r\n".to_string(),
            "400",
            "bad_request",
        ),
        (
            format!(
                "GET /{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
                "a".repeat(70_000)
            ),
            "414",
            "uri_too_long",
        ),
        (
            format!("GET /health HTTP/1.1\r\nHost: localhost\r\n{too_many_headers}\r\n"),
            "431",
            "header_too_large",
        ),
    ] {
        let mut stream = connect(&app).await;
        stream.write_all(request.as_bytes()).await.unwrap();
        let answer = read_until_closed(&mut stream).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer}"
        );
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], code, "{answer}");
    }
    // The service's own answers are untouched, on a connection of its own.
    let health = reqwest::get(format!("{}/health", app.address))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn a_client_that_reads_nothing_of_its_answers_is_disconnected() {
    // The other timeouts well past the test: they are not what ends it.
    let app = spawn_app_with(
        AppSpec::new(standard_tenants())
            .env("HTTP_HEADER_TIMEOUT_SECS", "60")
            .env("HTTP_BODY_TIMEOUT_SECS", "60")
            .env("HTTP_SEND_TIMEOUT_SECS", "1"),
    )
    .await;
    // A small receive window, and more answers asked for than the two sockets'
    // buffers hold: the server's writes wait on the client.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket
        .connect(app.address.trim_start_matches("http://").parse().unwrap())
        .await
        .unwrap();
    let request = b"GET /docs/swagger-ui-bundle.js HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let one = reqwest::get(format!("{}/docs/swagger-ui-bundle.js", app.address))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    let asked = 16;
    assert!(
        one * asked > 16 << 20,
        "answers of {one} bytes fit the buffers"
    );
    for _ in 0..asked {
        stream.write_all(request).await.unwrap();
    }
    // Reading nothing for five times HTTP_SEND_TIMEOUT_SECS (1 s)...
    tokio::time::sleep(Duration::from_secs(5)).await;
    // ...the server has given up: what it had sent, then the end, not every answer
    // on a connection kept open (which `read_until_closed` fails on).
    let received = read_until_closed(&mut stream).await;
    assert!(received.len() < one * asked, "{} bytes", received.len());
    // Everyone else is served.
    let health = reqwest::get(format!("{}/health", app.address))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection (or resets it); what it sent.
/// Fails if it stays open for 20 s (the timeouts under test are 1 s).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn a_client_trickling_its_request_head_is_disconnected() {
    let app = app_with_timeouts().await;
    let mut stream = connect(&app).await;
    let (mut reader, mut writer) = stream.split();
    // One byte of the head every 200 ms, never finishing it.
    let trickle = async {
        for byte in b"GET /health HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the server read a head trickled over 20 s");
    };
    let closed = async {
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        () = trickle => {}
        () = closed => {}
    }
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let app = app_with_timeouts().await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answered = read_until_closed(&mut stream).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_the_connection_is_freed() {
    let app = app_with_timeouts().await;
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /api/products HTTP/1.1\r\nHost: localhost\r\nX-Tenant-ID: demo\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":",
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_before_it_is_all_sent() {
    let app = app_with_timeouts().await;
    // Announced too long: refused on the header alone.
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /api/products HTTP/1.1\r\nHost: localhost\r\nX-Tenant-ID: demo\r\n\
              Content-Type: application/json\r\nContent-Length: 2000000\r\n\r\n",
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert!(answer.contains("larger than"), "{answer}");

    // Chunked, with no length: refused once the limit has streamed in, while the
    // client has not finished (it never does).
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /api/products HTTP/1.1\r\nHost: localhost\r\nX-Tenant-ID: demo\r\n\
              Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
    for _ in 0..5 {
        stream.write_all(chunk.as_bytes()).await.unwrap();
    }
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert!(answer.contains("larger than"), "{answer}");
}
