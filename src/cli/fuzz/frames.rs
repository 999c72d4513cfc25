//! The frames `presence fuzz` sends, each with the answer the README documents for it, and the
//! check of an answer against that.

use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Expect {
    /// The connection closes with this code (after a hello reply of `status` when given).
    Close { code: u16, hello_status: Option<u16> },
    /// A reply of this `messageType` and `status`, echoing `channel_id` when given.
    Reply { kind: &'static str, status: u16, channel_id: Option<String> },
    /// The keep-alive's `{}`.
    KeepAlive,
    /// Nothing (acks are not answered).
    Silent,
}

impl Expect {
    fn close(code: u16) -> Expect {
        Expect::Close { code, hello_status: None }
    }

    fn reply(kind: &'static str, status: u16) -> Expect {
        Expect::Reply { kind, status, channel_id: None }
    }

    pub(super) fn label(&self) -> String {
        match self {
            Expect::Close { code, .. } => format!("close {code}"),
            Expect::Reply { kind, status, .. } => format!("{kind} {status}"),
            Expect::KeepAlive => "keep-alive".into(),
            Expect::Silent => "no reply".into(),
        }
    }
}

pub(super) struct Case {
    pub(super) text: String,
    /// Sent as a binary frame (wire only).
    pub(super) binary: bool,
    pub(super) expect: Expect,
}

/// SplitMix64: small, fast, and the same sequence for the same seed on every machine.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub(super) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub(super) fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        let spelled = uuid::Uuid::from_u64_pair(a, b).to_string();
        match self.below(3) {
            0 => spelled,
            1 => spelled.to_uppercase(),
            _ => spelled.replace('-', ""),
        }
    }

    /// A proper, non-empty prefix of `text`, cut at a character boundary.
    pub(super) fn prefix(&mut self, text: &str) -> String {
        let boundaries: Vec<usize> = text.char_indices().map(|(at, _)| at).filter(|&at| at > 0).collect();
        text[..*self.pick(&boundaries)].to_owned()
    }

    /// A string of awkward characters (quotes, escapes, controls, non-ASCII), of up to `max`.
    pub(super) fn junk(&mut self, max: usize) -> String {
        const PIECES: &[&str] = &[
            "a", "Z", "0", " ", "\"", "\\", "{", "}", "[", "]", ":", ",", "\u{0}", "\n", "é", "☃", "𝄞",
            "\u{202e}", "null", "true", "-1e999", "\\u0000", "\\ud800",
        ];
        let len = self.below(max + 1);
        (0..len).map(|_| *self.pick(PIECES)).collect()
    }
}

/// What a connection has done so far, for the answers that depend on it.
pub(super) struct Conn {
    pub(super) presence: bool,
    pub(super) keepalive_sent: bool,
    /// Registers, unregisters and acks the connection may still make (`None`: unlimited).
    pub(super) writes_left: Option<u32>,
}

/// A value of any JSON type but a string, for fields that must be strings.
pub(super) fn not_a_string(rng: &mut Rng) -> Value {
    match rng.below(5) {
        0 => json!(rng.next() as i64),
        1 => Value::Null,
        2 => json!([rng.junk(4)]),
        3 => json!({"id": rng.junk(4)}),
        _ => json!(rng.chance(50)),
    }
}

/// A channel id that is not a UUID.
pub(super) fn bad_channel_id(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => String::new(),
        1 => rng.junk(40),
        2 => rng.uuid()[..20].to_owned(),
        _ => format!("{}x", rng.uuid()),
    }
}

/// A frame after the hello, with its documented answer.
pub(super) fn frame(rng: &mut Rng, conn: &mut Conn, channels: &mut Vec<String>) -> Case {
    let text = |value: Value| value.to_string();
    let case = |text: String, expect: Expect| Case { text, binary: false, expect };
    let write = |conn: &mut Conn| -> bool {
        match &mut conn.writes_left {
            Some(0) => false,
            Some(left) => {
                *left -= 1;
                true
            }
            None => true,
        }
    };
    match rng.below(20) {
        0..=2 => {
            let id = rng.uuid();
            let message = text(json!({"messageType": "register", "channelID": id}));
            if !write(conn) {
                return case(message, Expect::close(4429));
            }
            channels.push(id.clone());
            case(message, Expect::Reply { kind: "register", status: 200, channel_id: Some(id) })
        }
        3 => {
            let (message, echo) = match rng.below(3) {
                0 => {
                    let id = bad_channel_id(rng);
                    (text(json!({"messageType": "register", "channelID": id})), id)
                }
                1 => {
                    (text(json!({"messageType": "register", "channelID": not_a_string(rng)})), String::new())
                }
                _ => (text(json!({"messageType": "register"})), String::new()),
            };
            if !write(conn) {
                return case(message, Expect::close(4429));
            }
            case(message, Expect::Reply { kind: "register", status: 401, channel_id: Some(echo) })
        }
        4 => {
            let (message, expect) = if rng.chance(70) {
                let id = if channels.is_empty() || rng.chance(30) {
                    rng.uuid()
                } else {
                    rng.pick(channels).clone()
                };
                let message = text(json!({"messageType": "unregister", "channelID": id}));
                (message, Expect::Reply { kind: "unregister", status: 200, channel_id: Some(id) })
            } else {
                let id = bad_channel_id(rng);
                let message = text(json!({"messageType": "unregister", "channelID": id}));
                (message, Expect::Reply { kind: "unregister", status: 401, channel_id: Some(id) })
            };
            if !write(conn) {
                return case(message, Expect::close(4429));
            }
            case(message, expect)
        }
        5 | 6 => {
            let updates: Vec<Value> = (0..rng.below(4))
                .map(|_| match rng.below(4) {
                    0 => json!({"channelID": rng.uuid(), "version": rng.next() >> 1}),
                    1 => json!({"channelID": rng.uuid(), "version": (rng.next() >> 1).to_string()}),
                    2 => json!({"channelID": not_a_string(rng), "version": -1}),
                    _ => json!(rng.junk(6)),
                })
                .collect();
            let xpn: Vec<Value> = (0..rng.below(3))
                .map(|_| if rng.chance(70) { json!(rng.junk(12)) } else { not_a_string(rng) })
                .collect();
            let message = text(json!({"messageType": "ack", "updates": updates, "xpn": xpn}));
            if !write(conn) {
                return case(message, Expect::close(4429));
            }
            case(message, Expect::Silent)
        }
        7 | 8 => {
            let message = if rng.chance(50) { "{}".to_owned() } else { text(json!({"messageType": "ping"})) };
            let expect = match (conn.keepalive_sent, message.as_str()) {
                (true, _) => Expect::close(4774),
                (false, "{}") => Expect::KeepAlive,
                (false, _) => Expect::reply("ping", 200),
            };
            conn.keepalive_sent = true;
            case(message, expect)
        }
        9..=11 => {
            let code = *rng.pick(&["O", "A", "U"]);
            let status = if conn.presence { 200 } else { 403 };
            case(text(json!({"messageType": "ping", "xps": code})), Expect::reply("ping", status))
        }
        12 => {
            let xps = match rng.below(3) {
                0 => json!(rng.pick(&["o", "online", "", "OA", "X"]).to_string()),
                1 => not_a_string(rng),
                _ => json!(rng.junk(5)),
            };
            // A junk string may happen to spell a valid code; without a presence id any
            // status report is refused first.
            let valid = matches!(xps.as_str(), Some("O" | "A" | "U"));
            let status = match (conn.presence, valid) {
                (false, _) => 403,
                (true, true) => 200,
                (true, false) => 400,
            };
            case(text(json!({"messageType": "ping", "xps": xps})), Expect::reply("ping", status))
        }
        13 => case(
            text(json!({"messageType": "hello", "uaid": rng.junk(8), "channelIDs": []})),
            Expect::Close { code: 1008, hello_status: Some(401) },
        ),
        14 => {
            let message = match rng.below(3) {
                0 => text(
                    json!({"messageType": rng.pick(&["purge", "Hello", "HELLO", "notification", ""]).to_string()}),
                ),
                1 => text(json!({"messageType": not_a_string(rng)})),
                _ => text(json!({"uaid": rng.junk(8), "channelIDs": [rng.uuid()]})),
            };
            case(message, Expect::close(1008))
        }
        15 => {
            let message = match rng.below(5) {
                0 => text(json!([rng.junk(8)])),
                1 => (rng.next() as i64).to_string(),
                2 => text(json!(rng.junk(8))),
                3 => "null".to_owned(),
                _ => "true".to_owned(),
            };
            case(message, Expect::close(1008))
        }
        16 | 17 => {
            let message = match rng.below(4) {
                0 => {
                    // A proper prefix of an object is never a complete JSON value.
                    let whole = text(json!({"messageType": "register", "channelID": rng.junk(6)}));
                    rng.prefix(&whole)
                }
                // Ends in a comma, outside a string or inside an unclosed one: never valid.
                1 => format!("{{{},", rng.junk(30)),
                2 => format!("{}{{}}", "[".repeat(1 + rng.below(4000))),
                _ => format!("{}1{}", "{\"a\":".repeat(200 + rng.below(2000)), "}".repeat(10)),
            };
            case(message, Expect::close(1008))
        }
        18 => {
            // Extra keys, duplicate keys and odd spacing are allowed; the known ones count.
            let id = rng.uuid();
            let message = format!(
                "  {{ \"x\" : {} , \"messageType\" :\"unregister\", \"channelID\":\"{id}\" , \"more\":[1,{{}}] }}\n",
                json!(rng.junk(10))
            );
            if !write(conn) {
                return case(message, Expect::close(4429));
            }
            case(message, Expect::Reply { kind: "unregister", status: 200, channel_id: Some(id) })
        }
        _ => {
            // A whole burst of writes in no time: past the allowance the socket closes.
            match conn.writes_left {
                Some(_) => {
                    let message = text(json!({"messageType": "ack", "updates": []}));
                    if !write(conn) {
                        return case(message, Expect::close(4429));
                    }
                    case(message, Expect::Silent)
                }
                None => case(text(json!({"messageType": "ack", "updates": []})), Expect::Silent),
            }
        }
    }
}

/// The first frame of a connection: a hello (plain or with a presence id) or something else.
pub(super) enum Opening {
    Plain,
    Presence,
    Refused(Case),
}

pub(super) fn opening(rng: &mut Rng, wire: bool) -> Opening {
    match rng.below(12) {
        0 => {
            let text = match rng.below(3) {
                0 => json!({"messageType": "register", "channelID": rng.uuid()}).to_string(),
                1 => "{}".to_owned(),
                _ => {
                    let hello = json!({"messageType": "hello", "uaid": rng.junk(8), "channelIDs": []});
                    rng.prefix(&hello.to_string())
                }
            };
            Opening::Refused(Case { text, binary: false, expect: Expect::close(1008) })
        }
        1 if wire => {
            let text =
                json!({"messageType": "hello", "channelIDs": [], "xpi": format!("prid_{}", rng.junk(8))})
                    .to_string();
            Opening::Refused(Case {
                text,
                binary: false,
                expect: Expect::Close { code: 4401, hello_status: Some(401) },
            })
        }
        2..=6 => Opening::Presence,
        _ => Opening::Plain,
    }
}

/// Frames that only a socket can carry: binary, and larger than `max_message_size`.
pub(super) fn wire_only(rng: &mut Rng, max_message_size: usize) -> Option<Case> {
    match rng.below(40) {
        0 => Some(Case { text: rng.junk(20), binary: true, expect: Expect::close(1003) }),
        1 => {
            let padding = "x".repeat(max_message_size + 1 + rng.below(1000));
            let text = json!({"messageType": "ack", "updates": [], "pad": padding}).to_string();
            Some(Case { text, binary: false, expect: Expect::close(1009) })
        }
        _ => None,
    }
}

/// Whether the answers (JSON texts and `close N`) are what `expect` says.
pub(super) fn matches(expect: &Expect, answers: &[String]) -> bool {
    let json = |text: &String| serde_json::from_str::<Value>(text).ok();
    match expect {
        Expect::Silent => answers.is_empty(),
        Expect::KeepAlive => answers.len() == 1 && answers[0] == "{}",
        Expect::Close { code, hello_status } => {
            let closes = answers.last().is_some_and(|last| *last == format!("close {code}"));
            let hello_ok = match hello_status {
                Some(status) => {
                    answers.len() == 2
                        && json(&answers[0])
                            .is_some_and(|v| v["messageType"] == "hello" && v["status"] == *status)
                }
                None => answers.len() == 1,
            };
            closes && hello_ok
        }
        Expect::Reply { kind, status, channel_id } => {
            answers.len() == 1
                && json(&answers[0]).is_some_and(|v| {
                    v["messageType"] == *kind
                        && v["status"] == *status
                        && channel_id.as_ref().is_none_or(|id| v["channelID"] == *id)
                        && (*kind != "register" || *status != 200 || v["pushEndpoint"].is_string())
                })
        }
    }
}
