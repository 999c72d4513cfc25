//! The session's rules as a device sees them, without a socket.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::gateway::protocol::parse;

const SECOND: Duration = Duration::from_secs(1);

fn limits() -> Limits {
    Limits {
        ping_min_interval: 10 * SECOND,
        status_min_interval: 5 * SECOND,
        touch_every: 30 * SECOND,
        ping_interval: 60 * SECOND,
        pong_timeout: 10 * SECOND,
        writes_per_second: 2,
    }
}

/// A device session (hello with `xpi`) started at `t0`.
fn device() -> (Session, Instant) {
    let t0 = Instant::now();
    (Session::new(limits(), true, t0), t0)
}

/// A plain SimplePush session (hello without `xpi`).
fn plain() -> (Session, Instant) {
    let t0 = Instant::now();
    (Session::new(limits(), false, t0), t0)
}

fn text(session: &mut Session, json: &str, now: Instant) -> Vec<Action> {
    session.step(Input::Frame(Frame::Text(parse(json))), now)
}

/// The messages the actions send, as JSON values.
fn sent(actions: &[Action]) -> Vec<Value> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Send(message) => Some(serde_json::from_str(&message.to_json()).unwrap()),
            _ => None,
        })
        .collect()
}

fn closed(actions: &[Action]) -> Option<CloseReason> {
    actions.iter().find_map(|action| match action {
        Action::Close(reason) => Some(*reason),
        _ => None,
    })
}

fn applied(actions: &[Action]) -> Vec<Status> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::ApplyStatus { status, .. } => Some(*status),
            _ => None,
        })
        .collect()
}

fn channel(n: u8) -> ChannelId {
    ChannelId::from_bytes([n; 16])
}

fn update(n: u8, version: u64) -> PushUpdate {
    PushUpdate { channel: channel(n), version, data: None }
}

fn live(id: &str) -> Arc<LiveNotification> {
    Arc::new(LiveNotification {
        id: id.into(),
        app: "app".into(),
        title: "t".into(),
        body: "b".into(),
        url: None,
        sent: 0,
    })
}

fn updates(updates: Vec<PushUpdate>) -> Input {
    Input::Outbound(Batch { updates, ..Batch::default() })
}

fn lives(ids: &[&str]) -> Input {
    Input::Outbound(Batch { live: ids.iter().map(|id| live(id)).collect(), ..Batch::default() })
}

/// The (channel, version) pairs of the update messages the actions send.
fn versions(actions: &[Action]) -> Vec<(ChannelId, u64)> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Send(ServerMessage::Notification { updates }) => Some(updates),
            _ => None,
        })
        .flatten()
        .map(|entry| (entry.channel, entry.version))
        .collect()
}

fn live_ids(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Send(ServerMessage::Live { xpn }) => Some(xpn),
            _ => None,
        })
        .flatten()
        .map(|notification| notification.id.clone())
        .collect()
}

fn code(reason: CloseReason) -> Option<u16> {
    close_frame(reason).map(|frame| frame.code)
}

#[test]
fn a_second_hello_is_refused_with_401_and_closes() {
    let (mut session, t0) = plain();
    let actions = text(&mut session, r#"{"messageType":"hello","uaid":""}"#, t0);
    assert_eq!(sent(&actions), [json!({"messageType": "hello", "status": 401, "reason": "duplicate hello"})]);
    assert_eq!(closed(&actions), Some(CloseReason::Protocol("duplicate hello")));
    assert!(matches!(actions.last(), Some(Action::Close(_))), "the refusal goes out before the close");
}

#[test]
fn the_first_message_must_be_a_hello() {
    assert!(expect_hello(parse(r#"{"messageType":"hello"}"#)).is_ok());
    assert_eq!(
        expect_hello(parse(r#"{"messageType":"register","channelID":"x"}"#)),
        Err(CloseReason::Protocol("the first message must be hello"))
    );
    assert_eq!(expect_hello(parse("{")), Err(CloseReason::Protocol("invalid json")));
    assert_eq!(expect_hello(parse("[]")), Err(CloseReason::Protocol("json is not an object")));
}

#[test]
fn keepalives_are_answered_in_their_own_form() {
    let (mut session, t0) = plain();
    assert_eq!(sent(&text(&mut session, "{}", t0)), [json!({})]);
    let later = t0 + limits().ping_min_interval;
    assert_eq!(
        sent(&text(&mut session, r#"{"messageType":"ping"}"#, later)),
        [json!({"messageType": "ping", "status": 200})]
    );
}

#[test]
fn keepalives_faster_than_the_minimum_interval_close_with_4774() {
    let (mut session, t0) = plain();
    assert_eq!(closed(&text(&mut session, "{}", t0)), None);
    let actions = text(&mut session, r#"{"messageType":"ping"}"#, t0 + limits().ping_min_interval - SECOND);
    assert_eq!(sent(&actions), Vec::<Value>::new());
    assert_eq!(closed(&actions), Some(CloseReason::PingTooOften));
    assert_eq!(code(CloseReason::PingTooOften), Some(4774));
}

#[test]
fn garbage_and_unknown_message_types_close_with_1008() {
    let (mut session, t0) = plain();
    assert_eq!(closed(&text(&mut session, "nope", t0)), Some(CloseReason::Protocol("invalid json")));
    assert_eq!(closed(&text(&mut session, "[1]", t0)), Some(CloseReason::Protocol("json is not an object")));
    let actions = text(&mut session, r#"{"messageType":"purge"}"#, t0);
    assert_eq!(closed(&actions), Some(CloseReason::Protocol("unknown messageType")));
    assert_eq!(code(CloseReason::Protocol("unknown messageType")), Some(1008));
}

#[test]
fn every_close_reason_has_its_documented_code() {
    assert_eq!(code(CloseReason::Gone), None);
    assert_eq!(code(CloseReason::Binary), Some(1003));
    assert_eq!(code(CloseReason::TooLarge), Some(1009));
    assert_eq!(code(CloseReason::HelloTimeout), Some(1008));
    assert_eq!(code(CloseReason::Replaced), Some(1000));
    assert_eq!(code(CloseReason::Unresponsive), Some(1001));
    assert_eq!(code(CloseReason::ShuttingDown), Some(1001));
    assert_eq!(code(CloseReason::StoreUnavailable), Some(1011));
    assert_eq!(code(CloseReason::UnknownPresenceId), Some(4401));
    assert_eq!(code(CloseReason::Revoked), Some(4401));
    assert_eq!(code(CloseReason::TooManyWrites), Some(4429));
    assert_eq!(CloseReason::from(Eviction::Replaced), CloseReason::Replaced);
    assert_eq!(CloseReason::from(Eviction::Revoked), CloseReason::Revoked);
    assert_eq!(CloseReason::from(Eviction::LeaseLost), CloseReason::ShuttingDown);
}

#[test]
fn a_status_report_without_xpi_gets_403_and_the_socket_stays() {
    let (mut session, t0) = plain();
    let actions = text(&mut session, r#"{"messageType":"ping","xps":"O"}"#, t0);
    assert_eq!(
        sent(&actions),
        [
            json!({"messageType": "ping", "status": 403, "reason": "this connection has no presence id: say hello with xpi"})
        ]
    );
    assert_eq!(closed(&actions), None);
    assert!(applied(&actions).is_empty());
}

#[test]
fn a_status_report_with_a_bad_xps_gets_400() {
    let (mut session, t0) = device();
    let actions = text(&mut session, r#"{"messageType":"ping","xps":"Z"}"#, t0);
    assert_eq!(
        sent(&actions),
        [json!({"messageType": "ping", "status": 400, "reason": "xps must be O, A or U"})]
    );
    assert!(applied(&actions).is_empty());
}

#[test]
fn an_applied_status_is_answered_once_durable_not_before() {
    let (mut session, t0) = device();
    let actions = text(&mut session, r#"{"messageType":"ping","xps":"A"}"#, t0);
    assert!(matches!(actions.as_slice(), [Action::ApplyStatus { status: Status::Away, answer: true }]));
    assert!(sent(&actions).is_empty(), "the socket answers when the engine says it is recorded");
}

#[test]
fn statuses_within_the_interval_coalesce_and_the_latest_wins() {
    let (mut session, t0) = device();
    assert_eq!(applied(&text(&mut session, r#"{"messageType":"ping","xps":"O"}"#, t0)), [Status::Online]);
    for (i, code) in ["A", "U", "O", "A"].iter().enumerate() {
        let at = t0 + SECOND * (i as u32 + 1);
        let actions = text(&mut session, &format!(r#"{{"messageType":"ping","xps":"{code}"}}"#), at);
        assert!(applied(&actions).is_empty(), "within the interval nothing is applied");
        assert_eq!(
            sent(&actions),
            [json!({"messageType": "ping", "status": 200})],
            "every report is answered"
        );
    }
    let due = t0 + limits().status_min_interval;
    assert_eq!(session.status_due(), Some(due));
    assert!(applied(&session.step(Input::Tick, due - SECOND)).is_empty(), "an early tick does nothing");
    assert_eq!(applied(&session.step(Input::Tick, due)), [Status::Away]);
    assert!(applied(&session.step(Input::Tick, due + 10 * SECOND)).is_empty(), "applied once");
    assert_eq!(session.status_due(), None, "no timer is wanted once nothing waits");
}

#[test]
fn a_status_still_waiting_is_applied_when_the_socket_closes_then_the_grace_starts() {
    let (mut session, t0) = device();
    text(&mut session, r#"{"messageType":"ping","xps":"O"}"#, t0);
    text(&mut session, r#"{"messageType":"ping","xps":"U"}"#, t0 + SECOND);
    let actions = session.step(Input::Closed(CloseReason::Gone), t0 + 2 * SECOND);
    assert!(matches!(
        actions.as_slice(),
        [Action::ApplyStatus { status: Status::Offline, answer: false }, Action::Disconnected]
    ));
}

#[test]
fn no_grace_starts_for_a_removed_device_or_a_stopping_node_nor_without_a_device() {
    for reason in [CloseReason::Revoked, CloseReason::ShuttingDown] {
        let (mut session, t0) = device();
        assert!(session.step(Input::Closed(reason), t0).is_empty());
    }
    let (mut session, t0) = plain();
    assert!(session.step(Input::Closed(CloseReason::Gone), t0).is_empty());
}

#[test]
fn a_lower_or_equal_version_is_never_sent_again() {
    let (mut session, t0) = plain();
    assert_eq!(versions(&session.step(updates(vec![update(1, 5)]), t0)), [(channel(1), 5)]);
    assert!(session.step(updates(vec![update(1, 5)]), t0).is_empty());
    assert!(session.step(updates(vec![update(1, 3)]), t0).is_empty());
    assert_eq!(versions(&session.step(updates(vec![update(1, 6)]), t0)), [(channel(1), 6)]);
}

#[test]
fn a_batch_with_two_versions_of_one_channel_sends_only_the_highest_in_one_message() {
    let (mut session, t0) = plain();
    let actions = session.step(updates(vec![update(1, 2), update(2, 1), update(1, 4), update(1, 3)]), t0);
    assert_eq!(actions.len(), 1, "one message");
    assert_eq!(versions(&actions), [(channel(2), 1), (channel(1), 4)]);
}

#[test]
fn after_unregister_a_channel_starts_over_but_not_after_a_failed_one() {
    let (mut session, t0) = plain();
    session.step(updates(vec![update(1, 5)]), t0);
    let raw = channel(1).to_string();
    let failed =
        Input::Unregistered { channel_id: raw.clone(), channel: channel(1), outcome: Unregistered::Failed };
    assert_eq!(sent(&session.step(failed, t0))[0]["status"], 500);
    assert!(session.step(updates(vec![update(1, 1)]), t0).is_empty());
    let done =
        Input::Unregistered { channel_id: raw.clone(), channel: channel(1), outcome: Unregistered::Done };
    assert_eq!(
        sent(&session.step(done, t0)),
        [json!({"messageType": "unregister", "channelID": raw, "status": 200})]
    );
    assert_eq!(versions(&session.step(updates(vec![update(1, 1)]), t0)), [(channel(1), 1)]);
}

#[test]
fn a_live_notification_is_not_sent_twice_until_acked() {
    let (mut session, t0) = device();
    let actions = session.step(lives(&["n1", "n1", "n2"]), t0);
    assert_eq!(live_ids(&actions), ["n1", "n2"]);
    assert!(
        matches!(&actions[1], Action::MarkDelivered(ids) if ids == &["n1", "n2"]),
        "delivery is noted after sending"
    );
    assert!(session.step(lives(&["n1"]), t0).is_empty());
    let ack = text(&mut session, r#"{"messageType":"ack","xpn":["n1"]}"#, t0);
    assert!(matches!(ack.as_slice(), [Action::AckNotifications(ids)] if ids == &["n1"]));
    // Acked, it is forgotten: the store no longer hands it out, and the session would send it again.
    assert_eq!(live_ids(&session.step(lives(&["n1", "n2"]), t0)), ["n1"]);
}

#[test]
fn live_notifications_go_only_to_a_device_connection() {
    let (mut session, t0) = plain();
    assert!(session.step(lives(&["n1"]), t0).is_empty());
    assert!(text(&mut session, r#"{"messageType":"ack","xpn":["n1"]}"#, t0).is_empty());
}

#[test]
fn a_device_that_never_acks_is_remembered_only_so_far() {
    let (mut session, t0) = device();
    let first: Vec<String> = (0..SENT_LIVE_MAX).map(|i| format!("n{i}")).collect();
    let ids: Vec<&str> = first.iter().map(String::as_str).collect();
    assert_eq!(live_ids(&session.step(lives(&ids), t0)).len(), SENT_LIVE_MAX);
    // Within the bound an unacked notification is not sent twice…
    assert!(live_ids(&session.step(lives(&["n0"]), t0)).is_empty());
    // …past it the session starts over rather than grow: the next ones go out, and an
    // unacked one may come again.
    assert_eq!(live_ids(&session.step(lives(&["m0", "n1"]), t0)), ["m0", "n1"]);
    assert!(session.sent.as_ref().is_some_and(|sent| sent.live.len() <= SENT_LIVE_MAX));
}

#[test]
fn acks_of_updates_keep_only_well_formed_channel_ids() {
    let (mut session, t0) = plain();
    let raw = channel(3).to_string();
    let ack = format!(
        r#"{{"messageType":"ack","updates":[{{"channelID":"bad","version":1}},{{"channelID":"{raw}","version":7}}]}}"#
    );
    let actions = text(&mut session, &ack, t0);
    assert!(matches!(actions.as_slice(), [Action::Ack(acks)] if acks == &[(channel(3), 7)]));
}

#[test]
fn register_with_a_non_uuid_channel_id_answers_401_with_the_same_spelling() {
    let (mut session, t0) = plain();
    let actions = text(&mut session, r#"{"messageType":"register","channelID":"Not-A-Uuid"}"#, t0);
    assert_eq!(
        sent(&actions),
        [
            json!({"messageType": "register", "channelID": "Not-A-Uuid", "status": 401, "reason": "channelID must be a UUID"})
        ]
    );
    assert_eq!(closed(&actions), None);
    let actions = text(&mut session, r#"{"messageType":"unregister"}"#, t0);
    assert_eq!(sent(&actions)[0]["status"], 401);
    assert_eq!(sent(&actions)[0]["channelID"], "");
}

#[test]
fn register_asks_the_store_and_answers_with_the_requests_spelling() {
    let (mut session, t0) = plain();
    let upper = channel(0xab).to_string().to_uppercase();
    let actions = text(&mut session, &format!(r#"{{"messageType":"register","channelID":"{upper}"}}"#), t0);
    assert!(
        matches!(&actions[..], [Action::Register { channel_id, channel: c }] if *channel_id == upper && *c == channel(0xab))
    );
    let done = Registered::Done { endpoint: "https://push.example/update/tok".into() };
    let reply = session.step(Input::Registered { channel_id: upper.clone(), outcome: done }, t0);
    assert_eq!(
        sent(&reply),
        [
            json!({"messageType": "register", "channelID": upper, "status": 200, "pushEndpoint": "https://push.example/update/tok"})
        ]
    );
    let full = session
        .step(Input::Registered { channel_id: upper.clone(), outcome: Registered::TooManyChannels }, t0);
    assert_eq!(sent(&full)[0]["status"], 429);
    let failed = session.step(Input::Registered { channel_id: upper, outcome: Registered::Failed }, t0);
    assert_eq!(sent(&failed)[0]["status"], 500);
}

#[test]
fn a_catch_up_sends_what_is_stored_before_the_batch_it_held_back() {
    let (mut session, t0) = device();
    let batch = Batch { updates: vec![update(1, 2), update(2, 9)], live: vec![live("n2")], catch_up: true };
    let actions = session.step(Input::Outbound(batch), t0);
    let [Action::CatchUp { check_node: true, then }] = <[Action; 1]>::try_from(actions).unwrap() else {
        panic!("a catch-up is read from the store first");
    };
    let caught_up =
        Input::CaughtUp { stored: vec![update(1, 2)], queued: vec![live("n1"), live("n2")], then };
    let actions = session.step(caught_up, t0);
    assert_eq!(versions(&actions), [(channel(1), 2), (channel(2), 9)]);
    assert_eq!(live_ids(&actions), ["n1", "n2"]);
    assert_eq!(sent(&actions).len(), 3, "stored updates, queued notifications, then the batch's new update");
}

#[test]
fn a_silent_device_is_pinged_then_closed_as_unresponsive() {
    let (mut session, t0) = plain();
    let ping_at = t0 + limits().ping_interval;
    assert_eq!(session.liveness_due(), ping_at);
    assert!(session.step(Input::Tick, ping_at - SECOND).is_empty());
    assert!(matches!(session.step(Input::Tick, ping_at).as_slice(), [Action::Ping]));
    let give_up = ping_at + limits().pong_timeout;
    assert_eq!(session.liveness_due(), give_up);
    assert_eq!(closed(&session.step(Input::Tick, give_up)), Some(CloseReason::Unresponsive));
}

#[test]
fn any_frame_proves_life_and_restarts_the_silence() {
    let (mut session, t0) = plain();
    let ping_at = t0 + limits().ping_interval;
    session.step(Input::Tick, ping_at);
    let pong = ping_at + SECOND;
    assert!(session.step(Input::Frame(Frame::Control), pong).is_empty());
    assert_eq!(session.liveness_due(), pong + limits().ping_interval);
    assert!(session.step(Input::Tick, ping_at + limits().pong_timeout).is_empty());
}

#[test]
fn a_talking_device_restarts_its_silence_clock_in_the_store_now_and_then() {
    let (mut session, t0) = device();
    let every = limits().touch_every;
    assert!(!text(&mut session, r#"{"messageType":"ack"}"#, t0 + SECOND)
        .iter()
        .any(|a| matches!(a, Action::Touch)));
    let actions = text(&mut session, r#"{"messageType":"ping","xpx":1}"#, t0 + every);
    assert!(
        matches!(actions.first(), Some(Action::Touch)),
        "the store hears first, even of an unknown message"
    );
    assert!(!text(&mut session, "{}", t0 + every + SECOND).iter().any(|a| matches!(a, Action::Touch)));
    let (mut plain, t0) = plain();
    assert!(!text(&mut plain, "{}", t0 + every).iter().any(|a| matches!(a, Action::Touch)));
}

proptest! {
    /// Whatever updates arrive, in whatever batches, each channel's sent versions strictly
    /// increase, a message names a channel once, and a version higher than all sent goes out.
    #[test]
    fn versions_sent_per_channel_strictly_increase(
        batches in prop::collection::vec(prop::collection::vec((0u8..4, 0u64..20), 0..6), 0..20)
    ) {
        let (mut session, t0) = plain();
        let mut highest: HashMap<ChannelId, u64> = HashMap::new();
        for batch in batches {
            let offered: Vec<PushUpdate> = batch.iter().map(|&(n, v)| update(n, v)).collect();
            let sent = versions(&session.step(updates(offered.clone()), t0));
            let mut named = HashSet::new();
            for (channel, version) in &sent {
                prop_assert!(named.insert(*channel), "a channel appears once per message");
                prop_assert!(highest.get(channel).is_none_or(|&h| *version > h));
                highest.insert(*channel, *version);
            }
            for update in &offered {
                prop_assert!(highest.get(&update.channel).is_some_and(|&h| h >= update.version));
            }
        }
    }
}

#[test]
fn registers_unregisters_and_acks_past_the_rate_close_with_4429() {
    let (mut session, t0) = plain();
    // Five seconds' worth (2 a second) at once is allowed; the next write in the same instant is not.
    for i in 0..10 {
        let actions = text(&mut session, r#"{"messageType":"ack","updates":[]}"#, t0);
        assert!(!matches!(actions.as_slice(), [Action::Close(_)]), "write {i} is within the burst");
    }
    let actions = text(&mut session, r#"{"messageType":"register","channelID":"Not-A-Uuid"}"#, t0);
    assert!(matches!(actions.as_slice(), [Action::Close(CloseReason::TooManyWrites)]));
    // Half a second later one more write has been earned back.
    let (mut session, t0) = plain();
    for _ in 0..10 {
        text(&mut session, r#"{"messageType":"ack","updates":[]}"#, t0);
    }
    let later = t0 + SECOND / 2;
    let actions = text(&mut session, r#"{"messageType":"ack","updates":[]}"#, later);
    assert!(!matches!(actions.as_slice(), [Action::Close(_)]));
    let actions = text(&mut session, r#"{"messageType":"ack","updates":[]}"#, later);
    assert!(matches!(actions.as_slice(), [Action::Close(CloseReason::TooManyWrites)]));
}
