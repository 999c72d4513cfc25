//! Frames through `parse`, `expect_hello` and `Session`: no sockets, so a million fit in seconds.

use std::time::Duration;

use serde_json::json;

use super::frames::{frame, matches, opening, Conn, Expect, Opening, Rng};
use super::Tally;
use crate::gateway::protocol::parse;
use crate::gateway::session::{
    close_frame, expect_hello, Action, Frame, Input, Limits, Registered, Session, Unregistered,
};

/// The answer the state machine gave, in the shape of `Expect`, feeding back the outcomes of
/// the store effects it asked for as a working store would answer.
pub(super) fn machine_answer(
    session: &mut Session,
    actions: Vec<Action>,
    now: tokio::time::Instant,
) -> Vec<String> {
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

pub(super) fn machine_limits() -> Limits {
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
pub(super) fn run_machine(frames: usize, rng: &mut Rng) -> Tally {
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
