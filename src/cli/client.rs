//! A SimplePush device client: the tests use it now, the `device` simulator and the load
//! generator later. It speaks the protocol as the reference describes a user agent, and keeps
//! any message that arrives while it waits for a particular reply.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("websocket error")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("the server closed the connection (code {code:?}, reason {reason:?})")]
    Closed { code: Option<u16>, reason: String },
    #[error("no message within {0:?}")]
    Timeout(Duration),
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

/// Something the server sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    Message(Value),
    Closed { code: Option<u16>, reason: String },
}

pub struct DeviceClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Messages that arrived while waiting for a specific reply.
    backlog: VecDeque<Value>,
    /// How long a wait for the server may take before it is an error.
    pub timeout: Duration,
    /// Whether the server selected the `push-notification` subprotocol.
    pub subprotocol: Option<String>,
}

impl DeviceClient {
    /// Opens a WebSocket to `url` (`ws://host:port/`), offering `push-notification`.
    pub async fn connect(url: &str) -> Result<DeviceClient, ClientError> {
        let mut request = url.into_client_request()?;
        request
            .headers_mut()
            .insert("sec-websocket-protocol", "push-notification".parse().expect("static header"));
        let (ws, response) = tokio_tungstenite::connect_async(request).await?;
        let subprotocol =
            response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(DeviceClient { ws, backlog: VecDeque::new(), timeout: Duration::from_secs(10), subprotocol })
    }

    pub async fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    pub async fn send_json(&mut self, value: &Value) -> Result<(), ClientError> {
        self.send_text(&value.to_string()).await
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.ws.send(Message::binary(bytes)).await?;
        Ok(())
    }

    /// The next message or close from the server (answering WebSocket pings on the way).
    pub async fn recv(&mut self) -> Result<Received, ClientError> {
        if let Some(value) = self.backlog.pop_front() {
            return Ok(Received::Message(value));
        }
        self.recv_wire().await
    }

    /// Like `recv`, but gives up after `wait` with `Ok(None)`: for asserting that nothing comes.
    pub async fn recv_within(&mut self, wait: Duration) -> Result<Option<Received>, ClientError> {
        if let Some(value) = self.backlog.pop_front() {
            return Ok(Some(Received::Message(value)));
        }
        match tokio::time::timeout(wait, self.recv_wire_untimed()).await {
            Ok(received) => received.map(Some),
            Err(_) => Ok(None),
        }
    }

    async fn recv_wire(&mut self) -> Result<Received, ClientError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.recv_wire_untimed())
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    async fn recv_wire_untimed(&mut self) -> Result<Received, ClientError> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let value = serde_json::from_str(&text)
                        .map_err(|_| ClientError::Unexpected(format!("not json: {text}")))?;
                    return Ok(Received::Message(value));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Ok(Received::Closed {
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    })
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(error.into()),
                None => return Ok(Received::Closed { code: None, reason: String::new() }),
            }
        }
    }

    /// The next JSON message; a close is an error.
    pub async fn recv_json(&mut self) -> Result<Value, ClientError> {
        match self.recv().await? {
            Received::Message(value) => Ok(value),
            Received::Closed { code, reason } => Err(ClientError::Closed { code, reason }),
        }
    }

    /// Waits for a reply of `message_type` (matching `channel_id` if given), keeping anything
    /// else for later `recv` calls.
    async fn reply(&mut self, message_type: &str, channel_id: Option<&str>) -> Result<Value, ClientError> {
        loop {
            let value = match self.recv_wire().await? {
                Received::Message(value) => value,
                Received::Closed { code, reason } => return Err(ClientError::Closed { code, reason }),
            };
            let matches =
                value["messageType"] == message_type && channel_id.is_none_or(|c| value["channelID"] == c);
            if matches {
                return Ok(value);
            }
            self.backlog.push_back(value);
        }
    }

    /// Sends a hello and returns the reply (check `status` and `uaid`).
    pub async fn hello_with(&mut self, hello: Value) -> Result<Value, ClientError> {
        self.send_json(&hello).await?;
        self.reply("hello", None).await
    }

    /// Says hello with an optional UAID and returns the UAID the server assigned.
    pub async fn hello(&mut self, uaid: Option<&str>, channel_ids: &[&str]) -> Result<String, ClientError> {
        let reply = self
            .hello_with(
                json!({"messageType": "hello", "uaid": uaid.unwrap_or(""), "channelIDs": channel_ids}),
            )
            .await?;
        match (reply["status"].as_u64(), reply["uaid"].as_str()) {
            (Some(200), Some(uaid)) if !uaid.is_empty() => Ok(uaid.to_owned()),
            _ => Err(ClientError::Unexpected(reply.to_string())),
        }
    }

    /// Registers a channel and returns the whole reply.
    pub async fn register_reply(&mut self, channel_id: &str) -> Result<Value, ClientError> {
        self.send_json(&json!({"messageType": "register", "channelID": channel_id})).await?;
        self.reply("register", Some(channel_id)).await
    }

    /// Registers a channel and returns its push endpoint.
    pub async fn register(&mut self, channel_id: &str) -> Result<String, ClientError> {
        let reply = self.register_reply(channel_id).await?;
        match (reply["status"].as_u64(), reply["pushEndpoint"].as_str()) {
            (Some(200), Some(endpoint)) => Ok(endpoint.to_owned()),
            _ => Err(ClientError::Unexpected(reply.to_string())),
        }
    }

    /// Unregisters a channel and returns the reply's status.
    pub async fn unregister(&mut self, channel_id: &str) -> Result<u64, ClientError> {
        self.send_json(&json!({"messageType": "unregister", "channelID": channel_id})).await?;
        let reply = self.reply("unregister", Some(channel_id)).await?;
        reply["status"].as_u64().ok_or_else(|| ClientError::Unexpected(reply.to_string()))
    }

    /// Acks `(channelID, version)` pairs; the server sends no reply.
    pub async fn ack(&mut self, updates: &[(&str, u64)]) -> Result<(), ClientError> {
        let updates: Vec<Value> = updates
            .iter()
            .map(|(channel, version)| json!({"channelID": channel, "version": version}))
            .collect();
        self.send_json(&json!({"messageType": "ack", "updates": updates})).await
    }

    /// Reports a presence status (`"O"`, `"A"`, `"U"`, or anything else to test refusals) and
    /// returns the server's `ping` reply.
    pub async fn status(&mut self, xps: &str) -> Result<Value, ClientError> {
        self.send_json(&json!({"messageType": "ping", "xps": xps})).await?;
        self.reply("ping", None).await
    }

    /// Says hello as a presence device and returns the reply (check `status`).
    pub async fn hello_presence(&mut self, uaid: Option<&str>, prid: &str) -> Result<Value, ClientError> {
        self.hello_with(
            json!({"messageType": "hello", "uaid": uaid.unwrap_or(""), "channelIDs": [], "xpi": prid}),
        )
        .await
    }

    /// Waits for the next live notification message and returns its `xpn` entries.
    pub async fn live_notifications(&mut self) -> Result<Vec<Value>, ClientError> {
        loop {
            let value = self.recv_json().await?;
            if value["messageType"] == "notification" && value["xpn"].is_array() {
                return Ok(value["xpn"].as_array().cloned().unwrap_or_default());
            }
        }
    }

    /// Acks live notifications by id; the server sends no reply.
    pub async fn ack_live(&mut self, ids: &[&str]) -> Result<(), ClientError> {
        self.send_json(&json!({"messageType": "ack", "xpn": ids})).await
    }

    /// Waits for the next `notification` and returns its `updates` as `(channelID, version)`.
    pub async fn notification(&mut self) -> Result<Vec<(String, u64)>, ClientError> {
        loop {
            let value = self.recv_json().await?;
            if value["messageType"] == "notification" {
                return Ok(value["updates"]
                    .as_array()
                    .map(|updates| {
                        updates
                            .iter()
                            .filter_map(|u| {
                                Some((u["channelID"].as_str()?.to_owned(), u["version"].as_u64()?))
                            })
                            .collect()
                    })
                    .unwrap_or_default());
            }
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await?;
        Ok(())
    }
}
