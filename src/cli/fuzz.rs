//! `presence fuzz`: structured random SimplePush and presence frames, each with the answer the
//! README documents for it. They go first through the session's state machine (no sockets, a
//! million frames in seconds), then over real WebSockets to a node started for the purpose on a
//! temporary SQLite directory. Any frame answered otherwise, and any panic, is a failure.
//!
//! The generator knows what it built (a register with a malformed channel id, a truncated
//! object, a second hello…), so the expected answer comes from the generator, never from the
//! code under test.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::client::{DeviceClient, Received};
use crate::config::Config;
use crate::gateway::protocol::parse;
use crate::gateway::session::{
    close_frame, expect_hello, Action, Frame, Input, Limits, Registered, Session, Unregistered,
};
use crate::ops::{accounts, devices};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, Clone)]
pub struct Options {
    /// Frames through the state machine.
    pub frames: usize,
    /// Frames over real sockets.
    pub wire: usize,
    pub seed: u64,
}

/// What the README says a frame gets.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
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

    fn label(&self) -> String {
        match self {
            Expect::Close { code, .. } => format!("close {code}"),
            Expect::Reply { kind, status, .. } => format!("{kind} {status}"),
            Expect::KeepAlive => "keep-alive".into(),
            Expect::Silent => "no reply".into(),
        }
    }
}

struct Case {
    text: String,
    /// Sent as a binary frame (wire only).
    binary: bool,
    expect: Expect,
}

/// SplitMix64: small, fast, and the same sequence for the same seed on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        let spelled = uuid::Uuid::from_u64_pair(a, b).to_string();
        match self.below(3) {
            0 => spelled,
            1 => spelled.to_uppercase(),
            _ => spelled.replace('-', ""),
        }
    }

    /// A proper, non-empty prefix of `text`, cut at a character boundary.
    fn prefix(&mut self, text: &str) -> String {
        let boundaries: Vec<usize> = text.char_indices().map(|(at, _)| at).filter(|&at| at > 0).collect();
        text[..*self.pick(&boundaries)].to_owned()
    }

    /// A string of awkward characters (quotes, escapes, controls, non-ASCII), of up to `max`.
    fn junk(&mut self, max: usize) -> String {
        const PIECES: &[&str] = &[
            "a", "Z", "0", " ", "\"", "\\", "{", "}", "[", "]", ":", ",", "\u{0}", "\n", "é", "☃", "𝄞",
            "\u{202e}", "null", "true", "-1e999", "\\u0000", "\\ud800",
        ];
        let len = self.below(max + 1);
        (0..len).map(|_| *self.pick(PIECES)).collect()
    }
}

/// What a connection has done so far, for the answers that depend on it.
struct Conn {
    presence: bool,
    keepalive_sent: bool,
    /// Registers, unregisters and acks the connection may still make (`None`: unlimited).
    writes_left: Option<u32>,
}

/// A value of any JSON type but a string, for fields that must be strings.
fn not_a_string(rng: &mut Rng) -> Value {
    match rng.below(5) {
        0 => json!(rng.next() as i64),
        1 => Value::Null,
        2 => json!([rng.junk(4)]),
        3 => json!({"id": rng.junk(4)}),
        _ => json!(rng.chance(50)),
    }
}

/// A channel id that is not a UUID.
fn bad_channel_id(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => String::new(),
        1 => rng.junk(40),
        2 => rng.uuid()[..20].to_owned(),
        _ => format!("{}x", rng.uuid()),
    }
}

/// A frame after the hello, with its documented answer.
fn frame(rng: &mut Rng, conn: &mut Conn, channels: &mut Vec<String>) -> Case {
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
enum Opening {
    Plain,
    Presence,
    Refused(Case),
}

fn opening(rng: &mut Rng, wire: bool) -> Opening {
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
fn wire_only(rng: &mut Rng, max_message_size: usize) -> Option<Case> {
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

#[derive(Default)]
struct Tally {
    frames: usize,
    connections: usize,
    by_answer: std::collections::BTreeMap<String, usize>,
    /// Frames answered otherwise than documented, and the first few of them.
    wrong: usize,
    violations: Vec<String>,
}

impl Tally {
    fn count(&mut self, expect: &Expect) {
        self.frames += 1;
        *self.by_answer.entry(expect.label()).or_default() += 1;
    }

    fn violation(&mut self, case: &Case, got: String) {
        self.wrong += 1;
        if self.violations.len() < 20 {
            let shown: String = case.text.chars().take(120).collect();
            self.violations.push(format!("{shown:?}: expected {:?}, got {got}", case.expect));
        }
    }

    fn print(&self, phase: &str, elapsed: Duration) {
        let rate = self.frames as f64 / elapsed.as_secs_f64().max(1e-9);
        println!(
            "{phase}: {} frames on {} connections in {:.2} s ({:.0} frames/s), {} answered otherwise than documented",
            self.frames,
            self.connections,
            elapsed.as_secs_f64(),
            rate,
            self.wrong
        );
        let counts: Vec<String> = self.by_answer.iter().map(|(answer, n)| format!("{answer}: {n}")).collect();
        println!("  answers: {}", counts.join(", "));
        for violation in &self.violations {
            println!("  VIOLATION {violation}");
        }
    }
}

/// The answer the state machine gave, in the shape of `Expect`, feeding back the outcomes of
/// the store effects it asked for as a working store would answer.
fn machine_answer(session: &mut Session, actions: Vec<Action>, now: tokio::time::Instant) -> Vec<String> {
    let mut answers = Vec::new();
    let mut queue = actions;
    while !queue.is_empty() {
        let mut next = Vec::new();
        for action in queue {
            match action {
                Action::Send(message) => answers.push(message.to_json()),
                Action::Close(reason) => {
                    let code = close_frame(reason).map(|frame| frame.code);
                    answers.push(format!("close {}", code.unwrap_or(0)));
                }
                Action::ApplyStatus { answer: true, .. } => {
                    answers.push(json!({"messageType": "ping", "status": 200}).to_string())
                }
                Action::Register { channel_id, .. } => next.extend(session.step(
                    Input::Registered {
                        channel_id,
                        outcome: Registered::Done { endpoint: "http://e/x".into() },
                    },
                    now,
                )),
                Action::Unregister { channel_id, channel } => next.extend(
                    session
                        .step(Input::Unregistered { channel_id, channel, outcome: Unregistered::Done }, now),
                ),
                _ => {}
            }
        }
        queue = next;
    }
    answers
}

/// Whether the answers (JSON texts and `close N`) are what `expect` says.
fn matches(expect: &Expect, answers: &[String]) -> bool {
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

fn machine_limits() -> Limits {
    Limits {
        ping_min_interval: Duration::from_secs(3600),
        status_min_interval: Duration::from_secs(1),
        touch_every: Duration::from_secs(1800),
        ping_interval: Duration::from_secs(3600),
        pong_timeout: Duration::from_secs(10),
        // A burst of five seconds' worth: ten writes, with the clock standing still.
        writes_per_second: 2,
    }
}

/// Frames through `parse`, `expect_hello` and `Session`, one connection after another.
fn run_machine(frames: usize, rng: &mut Rng) -> Tally {
    let mut tally = Tally::default();
    let now = tokio::time::Instant::now();
    while tally.frames < frames {
        tally.connections += 1;
        let presence = match opening(rng, false) {
            Opening::Refused(case) => {
                let answers = match expect_hello(parse(&case.text)) {
                    Ok(_) => vec!["hello accepted".to_owned()],
                    Err(reason) => vec![format!("close {}", close_frame(reason).map_or(0, |f| f.code))],
                };
                tally.count(&case.expect);
                if !matches(&case.expect, &answers) {
                    tally.violation(&case, format!("{answers:?}"));
                }
                continue;
            }
            Opening::Presence => true,
            Opening::Plain => false,
        };
        let mut session = Session::new(machine_limits(), presence, now);
        let mut conn = Conn { presence, keepalive_sent: false, writes_left: Some(10) };
        let mut channels = Vec::new();
        for _ in 0..1 + rng.below(60) {
            let case = frame(rng, &mut conn, &mut channels);
            let actions = session.step(Input::Frame(Frame::Text(parse(&case.text))), now);
            let answers = machine_answer(&mut session, actions, now);
            tally.count(&case.expect);
            if !matches(&case.expect, &answers) {
                tally.violation(&case, format!("{answers:?}"));
            }
            if matches!(case.expect, Expect::Close { .. }) || tally.frames >= frames {
                break;
            }
        }
    }
    tally
}

/// What the server sent in answer to one frame: JSON texts, then `close N` if it closed.
async fn wire_answer(device: &mut DeviceClient, expect: &Expect) -> Vec<String> {
    let mut answers = Vec::new();
    let wanted = match expect {
        Expect::Silent => 0,
        Expect::Close { hello_status: Some(_), .. } => 2,
        _ => 1,
    };
    // A silent frame is checked by the next frame's answer arriving in its place; the wait
    // below only catches something sent where nothing was due.
    let wait = if wanted == 0 { Duration::from_millis(0) } else { Duration::from_secs(10) };
    while answers.len() < wanted.max(1) {
        match device.recv_within(wait).await {
            Ok(Some(Received::Message(value))) => {
                answers.push(if value == json!({}) { "{}".to_owned() } else { value.to_string() })
            }
            Ok(Some(Received::Closed { code, .. })) => {
                answers.push(format!("close {}", code.unwrap_or(0)));
                break;
            }
            Ok(None) => break,
            Err(error) => {
                answers.push(format!("error: {error}"));
                break;
            }
        }
        if wanted == 0 {
            break;
        }
    }
    answers
}

async fn fuzz_connection(
    ws_url: &str,
    prid: &str,
    rng: &mut Rng,
    frames: usize,
    max_message_size: usize,
    tally: &mut Tally,
) -> Result<(), BoxError> {
    let mut device = DeviceClient::connect(ws_url).await?;
    let opening = opening(rng, true);
    let presence = match &opening {
        Opening::Refused(case) => {
            device.send_text(&case.text).await?;
            let answers = wire_answer(&mut device, &case.expect).await;
            tally.count(&case.expect);
            if !matches(&case.expect, &answers) {
                tally.violation(case, format!("{answers:?}"));
            }
            return Ok(());
        }
        Opening::Presence => true,
        Opening::Plain => false,
    };
    if presence {
        let reply = device.hello_presence(None, prid).await?;
        if reply["status"] != 200 {
            return Err(format!("hello answered {reply}").into());
        }
    } else {
        device.hello(None, &[]).await?;
    }
    let mut conn = Conn { presence, keepalive_sent: false, writes_left: None };
    let mut channels = Vec::new();
    for _ in 0..frames {
        let case = wire_only(rng, max_message_size).unwrap_or_else(|| frame(rng, &mut conn, &mut channels));
        let sent = if case.binary {
            device.send_binary(case.text.clone().into_bytes()).await
        } else {
            device.send_text(&case.text).await
        };
        // The server may close before it has read all of a large frame.
        let answers = match sent {
            Ok(()) => wire_answer(&mut device, &case.expect).await,
            Err(error) => vec![format!("error: {error}")],
        };
        tally.count(&case.expect);
        if !matches(&case.expect, &answers) {
            tally.violation(&case, format!("{answers:?}"));
        }
        if answers.last().is_some_and(|a| a.starts_with("close") || a.starts_with("error")) {
            break;
        }
    }
    Ok(())
}

/// Counts panics anywhere in the process (the node runs in it), keeping the default report.
fn count_panics() -> Arc<AtomicUsize> {
    let panics = Arc::new(AtomicUsize::new(0));
    let counter = panics.clone();
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counter.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));
    panics
}

const WORKERS: usize = 8;

async fn run_wire(frames: usize, seed: u64) -> Result<(Tally, usize), BoxError> {
    let panics = count_panics();
    let dir = tempfile::tempdir()?;
    let settings = [
        ("listen", "127.0.0.1:0".to_owned()),
        ("data_dir", dir.path().display().to_string()),
        ("ping_min_interval", "1h".to_owned()),
        ("device_writes_per_second", "100000".to_owned()),
        ("hello_timeout", "10s".to_owned()),
    ];
    let config = Config::load(None, std::iter::empty(), settings.iter().map(|(k, v)| (*k, v.clone())))?;
    let max_message_size = config.max_message_size;
    let app = crate::app::build(config).await?;
    let ws_url = format!("ws://{}/", app.local_addr());
    let health = format!("http://{}/healthz", app.local_addr());
    let core = app.parts().core.clone();
    let hash = accounts::hash_password(&core, "fuzz password".into()).await?;
    let account = accounts::sign_up(&core, "fuzz@fuzz.example", &hash).await?;
    let mut prids = Vec::new();
    for i in 0..WORKERS {
        prids.push(devices::register(&core, account, &format!("fuzz {i}"), None).await?.prid);
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone()));

    let mut workers = Vec::new();
    for (i, prid) in prids.into_iter().enumerate() {
        let ws_url = ws_url.clone();
        let share = frames / WORKERS + usize::from(i < frames % WORKERS);
        workers.push(tokio::spawn(async move {
            let mut rng = Rng(seed ^ (0xA5A5_0000 + i as u64));
            let mut tally = Tally::default();
            while tally.frames < share {
                tally.connections += 1;
                let left = share - tally.frames;
                let burst = (1 + rng.below(40)).min(left);
                if let Err(error) =
                    fuzz_connection(&ws_url, &prid, &mut rng, burst, max_message_size, &mut tally).await
                {
                    tally.wrong += 1;
                    tally.violations.push(format!("connection failed: {error}"));
                    break;
                }
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for worker in workers {
        let tally = worker.await?;
        total.frames += tally.frames;
        total.connections += tally.connections;
        for (answer, n) in tally.by_answer {
            *total.by_answer.entry(answer).or_default() += n;
        }
        total.wrong += tally.wrong;
        total.violations.extend(tally.violations);
    }
    let healthy = reqwest::get(&health).await.map(|r| r.status().as_u16()).unwrap_or(0);
    if healthy != 200 {
        total.wrong += 1;
        total.violations.push(format!("/healthz answered {healthy} after the run"));
    }
    shutdown.cancel();
    server.await??;
    Ok((total, panics.load(Ordering::SeqCst)))
}

pub async fn run(options: Options) -> Result<(), BoxError> {
    println!("seed {}", options.seed);
    let mut rng = Rng(options.seed);
    let started = Instant::now();
    let machine = run_machine(options.frames, &mut rng);
    machine.print("state machine", started.elapsed());
    let mut failed = machine.wrong > 0;
    if options.wire > 0 {
        let started = Instant::now();
        let (wire, panics) = run_wire(options.wire, options.seed).await?;
        wire.print("real sockets", started.elapsed());
        println!("  panics in the node: {panics}");
        failed |= wire.wrong > 0 || panics > 0;
    }
    if failed {
        return Err("some frames were answered otherwise than documented".into());
    }
    Ok(())
}
