//! The device socket's framing (RFC 6455) as a client that writes its own bytes sees it:
//! fragments, pings, the close handshake, and frames the RFC forbids.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::spawn_app;

const TEXT: u8 = 0x1;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// A WebSocket client that writes frames byte by byte as the test says.
struct RawClient {
    tcp: TcpStream,
    read: Vec<u8>,
}

/// A client's frame: masked unless told otherwise.
fn frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let flag = if masked { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(flag | n as u8),
        n => {
            out.push(flag | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

impl RawClient {
    async fn open(addr: std::net::SocketAddr) -> RawClient {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let request = "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut client = RawClient { tcp, read: Vec::new() };
        let end = loop {
            if let Some(end) = client.read.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            client.more().await.expect("the upgrade's answer");
        };
        let head = String::from_utf8(client.read.drain(..end).collect()).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "the RFC's accept key: {head}");
        client
    }

    async fn more(&mut self) -> Option<()> {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), self.tcp.read(&mut chunk)).await.ok()?.ok()?;
        (n > 0).then(|| self.read.extend_from_slice(&chunk[..n]))
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    /// Sends `bytes` one at a time, each in a write of its own.
    async fn trickle(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.tcp.write_all(&[*byte]).await.unwrap();
            self.tcp.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The server's next frame (opcode and payload), or `None` once the stream ends.
    async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.read.len() >= 2 {
                assert_eq!(self.read[1] & 0x80, 0, "a server's frame is not masked");
                let (len, header) = match self.read[1] & 0x7F {
                    126 if self.read.len() >= 4 => {
                        (u16::from_be_bytes([self.read[2], self.read[3]]) as usize, 4)
                    }
                    126 => (usize::MAX, 4),
                    short => (short as usize, 2),
                };
                if len != usize::MAX && self.read.len() >= header + len {
                    assert_eq!(self.read[0] & 0x80, 0x80, "the server does not fragment");
                    let opcode = self.read[0] & 0x0F;
                    let payload = self.read[header..header + len].to_vec();
                    self.read.drain(..header + len);
                    return Some((opcode, payload));
                }
            }
            self.more().await?;
        }
    }

    async fn json(&mut self) -> Value {
        let (opcode, payload) = self.frame().await.expect("a message");
        assert_eq!(opcode, TEXT);
        serde_json::from_slice(&payload).unwrap()
    }

    /// The server's close frame's code, after which the stream ends.
    async fn close_code(&mut self) -> Option<u16> {
        let (opcode, payload) = self.frame().await.expect("a close frame");
        assert_eq!(opcode, CLOSE, "{}", String::from_utf8_lossy(&payload));
        assert!(self.frame().await.is_none(), "nothing after the close frame");
        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
    }
}

const HELLO: &[u8] = br#"{"messageType":"hello","uaid":"","channelIDs":[]}"#;

#[tokio::test]
async fn a_hello_in_fragments_and_trickled_bytes_is_one_message() {
    let app = spawn_app().await;
    let mut client = RawClient::open(app.addr).await;
    let (a, rest) = HELLO.split_at(10);
    let (b, c) = rest.split_at(20);
    client.trickle(&frame(false, TEXT, a, true)).await;
    // A ping may come between fragments; it is answered at once, with its payload.
    client.send(&frame(true, PING, b"between", true)).await;
    assert_eq!(client.frame().await, Some((PONG, b"between".to_vec())));
    client.send(&frame(false, CONTINUATION, b, true)).await;
    client.trickle(&frame(true, CONTINUATION, c, true)).await;
    let reply = client.json().await;
    assert_eq!(reply["messageType"], "hello");
    assert_eq!(reply["status"], 200);

    // Two whole messages in one write are two messages.
    let mut both = frame(true, TEXT, br#"{"messageType":"ping"}"#, true);
    both.extend(frame(true, TEXT, br#"{"messageType":"ping"}"#, true));
    client.send(&both).await;
    assert_eq!(client.json().await["status"], 200);
}

#[tokio::test]
async fn a_close_from_the_device_is_echoed_then_the_stream_ends() {
    let app = spawn_app().await;
    let mut client = RawClient::open(app.addr).await;
    client.send(&frame(true, TEXT, HELLO, true)).await;
    assert_eq!(client.json().await["status"], 200);
    let mut close = 4000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    client.send(&frame(true, CLOSE, &close, true)).await;
    assert_eq!(client.close_code().await, Some(4000));
}

#[tokio::test]
async fn frames_the_rfc_forbids_close_with_1002_and_bad_text_with_1007() {
    let app = spawn_app().await;
    let (mut bystander, _) = app.device().await;
    let mut reserved = frame(true, TEXT, HELLO, true);
    reserved[0] |= 0x40;
    let cases: [(&str, Vec<u8>, u16); 6] = [
        ("unmasked", frame(true, TEXT, HELLO, false), 1002),
        ("reserved bit", reserved, 1002),
        ("unknown opcode", frame(true, 0x3, b"", true), 1002),
        ("continuation first", frame(true, CONTINUATION, HELLO, true), 1002),
        ("long ping", frame(true, PING, &[b'p'; 126], true), 1002),
        ("not utf-8", frame(true, TEXT, &[b'{', 0xC3, 0x28, b'}'], true), 1007),
    ];
    for (what, bytes, code) in cases {
        let mut client = RawClient::open(app.addr).await;
        client.send(&bytes).await;
        assert_eq!(client.close_code().await, Some(code), "{what}");
    }
    // A close code no endpoint may send is a protocol error too.
    let mut client = RawClient::open(app.addr).await;
    client.send(&frame(true, CLOSE, &1005u16.to_be_bytes(), true)).await;
    assert_eq!(client.close_code().await, Some(1002));

    bystander.send_json(&serde_json::json!({"messageType": "ping"})).await.unwrap();
    assert_eq!(bystander.recv_json().await.unwrap()["status"], 200);
}
