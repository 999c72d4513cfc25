//! SimplePush messages as they cross the wire: parsing what a device sends, and the shapes of
//! what the server sends back. Parsing is strict about structure (one JSON object per text frame)
//! and lenient about extra keys, as the reference asks.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::domain::ChannelId;
use crate::domain::PushUpdate;
use crate::domain::Status;

/// A message from a device, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Hello(Hello),
    /// `register` with the raw `channelID` (validated by the session, which answers 401 for a
    /// malformed one and keeps the socket).
    Register {
        channel_id: Option<String>,
    },
    Unregister {
        channel_id: Option<String>,
    },
    /// Acks of SimplePush updates (`updates`) and of live notifications (`xpn`); malformed
    /// entries are dropped silently, as autopush did.
    Ack {
        updates: Vec<(String, u64)>,
        xpn: Vec<String>,
    },
    /// The `{}` keep-alive.
    KeepAlive,
    /// `{"messageType":"ping"}` without a status: a keep-alive in its long form.
    Ping,
    /// `{"messageType":"ping","xps":…}`: a presence status report; `None` for an invalid code.
    Status(Option<Status>),
    /// Any other `messageType` (or none, in a non-empty object).
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hello {
    /// `None` for missing, null or empty.
    pub uaid: Option<String>,
    pub channel_ids: usize,
    /// The presence id (PrID), when the device reports presence.
    pub xpi: Option<String>,
}

/// Why a frame could not be read as a SimplePush message; every one closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("invalid json")]
    InvalidJson,
    #[error("json is not an object")]
    NotAnObject,
}

pub fn parse(text: &str) -> Result<ClientMessage, ParseError> {
    let value: Value = serde_json::from_str(text).map_err(|_| ParseError::InvalidJson)?;
    let Value::Object(object) = value else {
        return Err(ParseError::NotAnObject);
    };
    if object.is_empty() {
        return Ok(ClientMessage::KeepAlive);
    }
    let Some(kind) = object.get("messageType").and_then(Value::as_str) else {
        return Ok(ClientMessage::Unknown(String::new()));
    };
    Ok(match kind {
        "hello" => ClientMessage::Hello(Hello {
            uaid: object.get("uaid").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned),
            channel_ids: object.get("channelIDs").and_then(Value::as_array).map_or(0, Vec::len),
            xpi: object.get("xpi").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned),
        }),
        "register" => ClientMessage::Register { channel_id: channel_id(&object) },
        "unregister" => ClientMessage::Unregister { channel_id: channel_id(&object) },
        "ack" => ClientMessage::Ack {
            updates: object
                .get("updates")
                .and_then(Value::as_array)
                .map(|entries| entries.iter().filter_map(ack_entry).collect())
                .unwrap_or_default(),
            xpn: object
                .get("xpn")
                .and_then(Value::as_array)
                .map(|ids| ids.iter().filter_map(Value::as_str).take(1000).map(str::to_owned).collect())
                .unwrap_or_default(),
        },
        "ping" => match object.get("xps") {
            Some(xps) => ClientMessage::Status(xps.as_str().and_then(Status::from_code)),
            None => ClientMessage::Ping,
        },
        other => ClientMessage::Unknown(other.to_owned()),
    })
}

fn channel_id(object: &Map<String, Value>) -> Option<String> {
    object.get("channelID").and_then(Value::as_str).map(str::to_owned)
}

fn ack_entry(entry: &Value) -> Option<(String, u64)> {
    let chid = entry.get("channelID")?.as_str()?.to_owned();
    let version = match entry.get("version")? {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    Some((chid, version))
}

/// A message from the server.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "messageType", rename_all = "lowercase")]
pub enum ServerMessage {
    Hello {
        uaid: String,
        status: u16,
    },
    /// The reply to a second hello, sent just before closing.
    #[serde(rename = "hello")]
    HelloRefused {
        status: u16,
        reason: &'static str,
    },
    Register {
        #[serde(rename = "channelID")]
        channel_id: String,
        status: u16,
        #[serde(rename = "pushEndpoint", skip_serializing_if = "Option::is_none")]
        push_endpoint: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
    },
    Unregister {
        #[serde(rename = "channelID")]
        channel_id: String,
        status: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
    },
    Notification {
        updates: Vec<UpdateEntry>,
    },
    /// Live notifications from apps (the presence extension).
    #[serde(rename = "notification")]
    Live {
        xpn: Vec<std::sync::Arc<crate::domain::LiveNotification>>,
    },
    Ping {
        status: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
    },
    /// The `{}` reply to a `{}` keep-alive.
    #[serde(skip)]
    KeepAlive,
}

fn as_display<S: serde::Serializer>(value: &ChannelId, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

#[derive(Debug, Clone, Serialize)]
pub struct UpdateEntry {
    #[serde(rename = "channelID", serialize_with = "as_display")]
    pub channel: ChannelId,
    pub version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl From<&PushUpdate> for UpdateEntry {
    fn from(update: &PushUpdate) -> UpdateEntry {
        UpdateEntry { channel: update.channel, version: update.version, data: update.data.clone() }
    }
}

impl ServerMessage {
    pub fn to_json(&self) -> String {
        if let ServerMessage::KeepAlive = self {
            return "{}".to_owned();
        }
        serde_json::to_string(self).expect("server messages always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_keepalive_and_every_message_type_parse() {
        assert_eq!(parse("{}"), Ok(ClientMessage::KeepAlive));
        assert_eq!(parse(r#"{"messageType":"ping"}"#), Ok(ClientMessage::Ping));
        assert_eq!(
            parse(r#"{"messageType":"hello","uaid":"","channelIDs":["a"],"x":1}"#),
            Ok(ClientMessage::Hello(Hello { uaid: None, channel_ids: 1, xpi: None }))
        );
        assert_eq!(
            parse(
                r#"{"messageType":"ack","updates":[{"channelID":"c","version":3},{"version":1},{"channelID":"d","version":"4"}]}"#
            ),
            Ok(ClientMessage::Ack { updates: vec![("c".into(), 3), ("d".into(), 4)], xpn: vec![] })
        );
        assert_eq!(
            parse(r#"{"messageType":"ping","xps":"A"}"#),
            Ok(ClientMessage::Status(Some(Status::Away)))
        );
        assert_eq!(parse(r#"{"messageType":"ping","xps":"Z"}"#), Ok(ClientMessage::Status(None)));
        assert_eq!(parse(r#"{"messageType":"ping","xps":1}"#), Ok(ClientMessage::Status(None)));
        assert_eq!(
            parse(r#"{"messageType":"hello","xpi":"prid_x"}"#),
            Ok(ClientMessage::Hello(Hello { uaid: None, channel_ids: 0, xpi: Some("prid_x".into()) }))
        );
        assert_eq!(
            parse(r#"{"messageType":"ack","xpn":["n1",2,"n3"]}"#),
            Ok(ClientMessage::Ack { updates: vec![], xpn: vec!["n1".into(), "n3".into()] })
        );
        assert_eq!(parse(r#"{"messageType":"purge"}"#), Ok(ClientMessage::Unknown("purge".into())));
        assert_eq!(parse(r#"{"uaid":"x"}"#), Ok(ClientMessage::Unknown(String::new())));
    }

    #[test]
    fn non_objects_and_garbage_are_errors() {
        assert_eq!(parse("[]"), Err(ParseError::NotAnObject));
        assert_eq!(parse("42"), Err(ParseError::NotAnObject));
        assert_eq!(parse("{"), Err(ParseError::InvalidJson));
        assert_eq!(parse(""), Err(ParseError::InvalidJson));
    }

    #[test]
    fn replies_have_the_documented_shape() {
        let hello = ServerMessage::Hello { uaid: "ab".into(), status: 200 };
        assert_eq!(hello.to_json(), r#"{"messageType":"hello","uaid":"ab","status":200}"#);
        let refused = ServerMessage::HelloRefused { status: 401, reason: "duplicate hello" };
        assert_eq!(refused.to_json(), r#"{"messageType":"hello","status":401,"reason":"duplicate hello"}"#);
    }

    proptest! {
        #[test]
        fn parsing_never_panics(text in "\\PC{0,64}") {
            let _ = parse(&text);
        }
    }
}
