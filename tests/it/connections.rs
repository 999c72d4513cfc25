//! What the server does with connections themselves: it closes those that send nothing, caps
//! how many are open, and keeps upgraded WebSockets out of the HTTP timeouts.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::{builder, channel_id};

/// Reads until the server closes the connection (end of stream or a reset); what came first.
async fn read_until_closed(tcp: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection");
    received
}

#[tokio::test]
async fn connections_that_send_nothing_are_closed_while_the_server_keeps_answering() {
    let app = builder().set("http_header_timeout", "1s").set("http_idle_timeout", "1s").spawn().await;
    // A device connected before keeps its WebSocket past the HTTP timeouts.
    let (mut device, _) = app.device().await;
    let mut silent = Vec::new();
    for _ in 0..2000 {
        silent.push(TcpStream::connect(app.addr).await.unwrap());
    }
    assert_eq!(app.get("/healthz").await.status, 200, "the server answers while they wait");
    // A kept-alive connection that asks nothing more is closed too.
    let mut kept = TcpStream::connect(app.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: presence\r\n\r\n").await.unwrap();

    // The timeout is 1 s; the wait allows for a slow, shared machine.
    let within = Duration::from_secs(20);
    for tcp in &mut silent {
        assert!(read_until_closed(tcp, within).await.is_empty(), "closed without an answer");
    }
    let answered = String::from_utf8(read_until_closed(&mut kept, within).await).unwrap();
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    assert_eq!(app.get("/healthz").await.status, 200);

    let chid = channel_id();
    let endpoint = device.register(&chid).await.expect("the WebSocket outlives the HTTP timeouts");
    assert_eq!(app.put(&endpoint, "version=1").await.status, 200);
    assert_eq!(device.notification().await.unwrap(), vec![(chid, 1)]);
}

#[tokio::test]
async fn a_connection_past_max_connections_is_refused_with_503() {
    let app = builder().set("max_connections", "3").spawn().await;
    let (first, _) = app.device().await;
    let (_second, _) = app.device().await;
    let (_third, _) = app.device().await;

    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: presence\r\n\r\n").await.unwrap();
    let answer = String::from_utf8(read_until_closed(&mut tcp, Duration::from_secs(10)).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let body: serde_json::Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["code"], "too_many_connections");

    // A closed connection frees its place.
    drop(first);
    let mut answered = false;
    for _ in 0..100 {
        let mut tcp = TcpStream::connect(app.addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: presence\r\nconnection: close\r\n\r\n").await.unwrap();
        let answer = read_until_closed(&mut tcp, Duration::from_secs(10)).await;
        if answer.starts_with(b"HTTP/1.1 200") {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered, "the server answers again once a connection closed");
}
