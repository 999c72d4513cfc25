//! Robustness at scale, bounded and on loopback: a million fuzzed frames, ten thousand devices
//! reconnecting at once, and twenty SIGKILLs while statuses change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::support::process::presence_command;
use crate::support::service::{seed_granted_devices, Seeded};
use crate::support::{spawn_process, DataDir, DeviceClient};

#[tokio::test]
async fn a_million_fuzzed_frames_are_each_answered_as_documented() {
    let output = presence_command()
        .args(["fuzz", "--frames", "1000000", "--wire", "10000"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(output.status.success(), "presence fuzz failed:\n{stdout}");
    assert!(stdout.contains("state machine: 1000000 frames"), "{stdout}");
    assert!(stdout.contains("real sockets: 10000 frames"), "{stdout}");
    assert_eq!(stdout.matches(", 0 answered otherwise than documented").count(), 2, "{stdout}");
    assert!(stdout.contains("panics in the node: 0"), "{stdout}");
}

/// One entry of an app's log as the stream shows it.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    seq: u64,
    uid: String,
    status: String,
}

/// An app's stream followed across restarts of the server: it resumes after the last seq it
/// saw (from the start of the log at first), from whichever address `base` holds now, and
/// records every seq that does not rise.
struct Follower {
    events: Arc<Mutex<Vec<Event>>>,
    not_rising: Arc<Mutex<Vec<(u64, u64)>>>,
    base: watch::Sender<String>,
    task: tokio::task::JoinHandle<()>,
}

/// The app's stream after `since` (from its live end when `None`), until it ends or breaks, or `each`
/// says it has read enough.
async fn read_stream(base: &str, app: &Seeded, since: Option<u64>, mut each: impl FnMut(Event) -> bool) {
    let query = since.map(|seq| format!("?since={seq}")).unwrap_or_default();
    let request = reqwest::Client::new()
        .get(format!("{base}/{}/presence.json{query}", app.app_id))
        .basic_auth(&app.app_id, Some(&app.secret))
        .send();
    // A loaded node (ten thousand hellos on a small PostgreSQL pool) may take a while to answer.
    let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(30), request).await else { return };
    if response.status() != 200 {
        return;
    }
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout(Duration::from_secs(30), body.next()).await {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            let Ok(entries) = serde_json::from_str::<Vec<(String, String, u64)>>(&line) else { continue };
            for (uid, status, seq) in entries {
                if !each(Event { seq, uid, status }) {
                    return;
                }
            }
        }
    }
}

impl Follower {
    fn start(base: String, app: &Seeded) -> Follower {
        let (base, mut current) = watch::channel(base);
        let events = Arc::new(Mutex::new(Vec::<Event>::new()));
        let not_rising = Arc::new(Mutex::new(Vec::new()));
        let app = Seeded { app_id: app.app_id.clone(), secret: app.secret.clone(), devices: Vec::new() };
        let (seen, wrong) = (events.clone(), not_rising.clone());
        let task = tokio::spawn(async move {
            loop {
                let base = current.borrow_and_update().clone();
                let since = seen.lock().unwrap().last().map_or(0, |e: &Event| e.seq);
                read_stream(&base, &app, Some(since), |event| {
                    let mut seen = seen.lock().unwrap();
                    if let Some(last) = seen.last() {
                        if event.seq <= last.seq {
                            wrong.lock().unwrap().push((last.seq, event.seq));
                        }
                    }
                    seen.push(event);
                    true
                })
                .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Follower { events, not_rising, base, task }
    }

    /// Each uid's latest status as the app has seen it.
    fn latest(&self) -> HashMap<String, String> {
        let events = self.events.lock().unwrap();
        events.iter().map(|e| (e.uid.clone(), e.status.clone())).collect()
    }

    /// Waits until the app's latest status of every uid in `expected` is the expected one;
    /// panics after `within` naming how many still differ and one of them.
    async fn wait_for(&self, expected: &HashMap<String, String>, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        loop {
            let latest = self.latest();
            let wrong: Vec<_> =
                expected.iter().filter(|(uid, status)| latest.get(*uid) != Some(*status)).collect();
            if wrong.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                let (uid, status) = wrong[0];
                panic!(
                    "{what}: {} of {} users still differ after {within:?}, e.g. {uid} is {:?}, not {status}",
                    wrong.len(),
                    expected.len(),
                    latest.get(uid)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A device says hello with its PrID and reports `status`, answered 200. Like a real device, it
/// tries to connect again (after 0.2, 0.4, … s) when the connection fails.
async fn present(ws_url: &str, prid: &str, status: &str) -> Result<DeviceClient, String> {
    let mut attempt = 0;
    let mut device = loop {
        match DeviceClient::connect(ws_url).await {
            Ok(device) => break device,
            Err(error) if attempt >= 8 => return Err(format!("connect, {attempt} times: {error:?}")),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
        }
    };
    device.timeout = Duration::from_secs(60);
    let hello = device.hello_presence(None, prid).await.map_err(|e| format!("hello: {e:?}"))?;
    if hello["status"] != 200 {
        return Err(format!("hello answered {hello}"));
    }
    let reply = device.status(status).await.map_err(|e| format!("status: {e:?}"))?;
    if reply["status"] != 200 {
        return Err(format!("the status was answered {reply}"));
    }
    Ok(device)
}

/// Connects every `(prid, status)` at once (at most `at_once` connecting at a time).
async fn connect_all(
    ws_url: &str,
    devices: Vec<(String, &'static str)>,
    at_once: usize,
) -> Vec<DeviceClient> {
    let gate = Arc::new(Semaphore::new(at_once));
    let tasks: Vec<_> = devices
        .into_iter()
        .map(|(prid, status)| {
            let (ws_url, gate) = (ws_url.to_owned(), gate.clone());
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.unwrap();
                present(&ws_url, &prid, status).await
            })
        })
        .collect();
    let mut connected = Vec::with_capacity(tasks.len());
    for task in tasks {
        connected.push(task.await.unwrap().unwrap_or_else(|error| panic!("a device failed: {error}")));
    }
    connected
}

fn app_name(status: &str) -> String {
    match status {
        "O" => "online",
        "A" => "away",
        _ => "offline",
    }
    .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_devices_reconnecting_at_once_lose_no_status_and_leave_no_ghost() {
    const DEVICES: usize = 10_000;
    // These do not come back after the storm: they must end offline.
    const GONE: usize = 1_000;
    const GRACE: Duration = Duration::from_secs(3);
    let data = DataDir::new();
    let started = Instant::now();
    let seeded = seed_granted_devices(&data.path, DEVICES).await;
    eprintln!("seeded {DEVICES} users in {:?}", started.elapsed());
    let flags = ["--presence-grace", "3s", "--status-min-interval", "0s", "--stream-heartbeat", "2s"];
    // Old sockets are still closing while new ones arrive: the cap (10,000 by default) is raised
    // to what the process's file limit (20,000 here) allows.
    let flags = [&flags[..], &["--hello-timeout", "60s", "--max-connections", "19000"]].concat();
    let server = spawn_process(&data.path, &flags).await;
    let follower = Follower::start(server.base(), &seeded);

    let before: Vec<&'static str> = (0..DEVICES).map(|i| if i % 2 == 0 { "O" } else { "A" }).collect();
    let devices = seeded.devices.iter().zip(&before).map(|((prid, _), s)| (prid.clone(), *s)).collect();
    let sockets = connect_all(&server.ws_url(), devices, 500).await;
    let expected: HashMap<String, String> =
        seeded.devices.iter().zip(&before).map(|((_, uid), s)| (uid.clone(), app_name(s))).collect();
    follower.wait_for(&expected, Duration::from_secs(300), "before the storm").await;
    eprintln!("{DEVICES} devices present after {:?}", started.elapsed());

    // Every socket drops at once, and all but the last GONE reconnect at once; one in three
    // reports a different status than before.
    drop(sockets);
    let after: Vec<&'static str> = (0..DEVICES)
        .map(|i| match (i >= DEVICES - GONE, i % 3 == 0, before[i]) {
            (true, _, _) => "gone",
            (false, true, "O") => "A",
            (false, true, _) => "O",
            (false, false, same) => same,
        })
        .collect();
    let returning = seeded
        .devices
        .iter()
        .zip(&after)
        .filter(|(_, s)| **s != "gone")
        .map(|((prid, _), s)| (prid.clone(), *s))
        .collect();
    let sockets = connect_all(&server.ws_url(), returning, 2_000).await;
    assert_eq!(sockets.len(), DEVICES - GONE);
    let expected: HashMap<String, String> =
        seeded.devices.iter().zip(&after).map(|((_, uid), s)| (uid.clone(), app_name(s))).collect();
    follower.wait_for(&expected, Duration::from_secs(300), "after the storm").await;
    eprintln!("the storm settled after {:?}", started.elapsed());
    // Once every grace has run out, nothing changes any more: no late offline for a device
    // that came back, no ghost for one that did not.
    tokio::time::sleep(GRACE + Duration::from_secs(2)).await;
    follower.wait_for(&expected, Duration::from_secs(1), "after the grace").await;
    assert!(follower.not_rising.lock().unwrap().is_empty(), "the stream's seqs rise");
    drop(sockets);
    server.kill9().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sigkills_during_status_changes_reuse_no_seq_and_leave_every_app_the_true_status() {
    const USERS: usize = 20;
    const KILLS: usize = 20;
    let data = DataDir::new();
    let seeded = seed_granted_devices(&data.path, USERS).await;
    let flags = ["--presence-grace", "0s", "--status-min-interval", "0s", "--stream-heartbeat", "1s"];
    let mut server = spawn_process(&data.path, &flags).await;
    let follower = Follower::start(server.base(), &seeded);
    // Per user, every status a device had answered 200, with "offline" where a restart reset it.
    let mut told: Vec<Vec<String>> = vec![Vec::new(); USERS];
    let all_offline: HashMap<String, String> =
        seeded.devices.iter().map(|(_, uid)| (uid.clone(), "offline".to_owned())).collect();

    for kill in 0..KILLS {
        let acked = Arc::new(Mutex::new(vec![Vec::<String>::new(); USERS]));
        let ws_url = server.ws_url();
        let reporters: Vec<_> = seeded
            .devices
            .iter()
            .enumerate()
            .map(|(i, (prid, _))| {
                let (ws_url, prid, acked) = (ws_url.clone(), prid.clone(), acked.clone());
                tokio::spawn(async move {
                    let Ok(mut device) = DeviceClient::connect(&ws_url).await else { return };
                    if device.hello_presence(None, &prid).await.is_err() {
                        return;
                    }
                    // Online and away alternate, so every report changes what the app sees.
                    for n in 0.. {
                        let status = if (n + i) % 2 == 0 { "O" } else { "A" };
                        match device.status(status).await {
                            Ok(reply) if reply["status"] == 200 => {
                                acked.lock().unwrap()[i].push(app_name(status))
                            }
                            _ => return,
                        }
                    }
                })
            })
            .collect();
        // The kill point: anywhere from before the first report to well into the stream.
        let at = Duration::from_millis(rand::random::<u64>() % 700);
        tokio::time::sleep(at).await;
        server.kill9().await;
        for reporter in reporters {
            let _ = reporter.await;
        }
        for (user, statuses) in acked.lock().unwrap().iter().enumerate() {
            told[user].extend(statuses.iter().cloned());
            // A user the app already saw offline (no report went through this round) is not
            // told offline again.
            if told[user].last().is_some_and(|last| last != "offline") {
                told[user].push("offline".to_owned());
            }
        }
        server = spawn_process(&data.path, &flags).await;
        follower.base.send(server.base()).unwrap();
        // A node starts with every device offline: each app hears it of every user.
        follower
            .wait_for(&all_offline, Duration::from_secs(30), &format!("after kill {kill} at {at:?}"))
            .await;
    }

    assert_eq!(*follower.not_rising.lock().unwrap(), Vec::new(), "a seq never repeats or falls");
    // What the app saw live is the log itself: read again from the start, nothing it saw was
    // lost or renumbered by a crash.
    let seen = follower.events.lock().unwrap().clone();
    let mut log = Vec::new();
    read_stream(&server.base(), &seeded, Some(0), |event| {
        log.push(event);
        log.len() < seen.len()
    })
    .await;
    let differs = (0..log.len().max(seen.len())).find(|&i| log.get(i) != seen.get(i));
    if let Some(i) = differs {
        panic!(
            "the log read again after {KILLS} kills differs from what the app saw live at entry {i} of {}: \
             read again {:?}, seen live {:?}",
            seen.len(),
            &log[i.saturating_sub(2)..(i + 3).min(log.len())],
            &seen[i.saturating_sub(2)..(i + 3).min(seen.len())]
        );
    }
    // Every status a device was told was recorded reached the app, in order, and each restart's
    // offline after it.
    for (user, (_, uid)) in seeded.devices.iter().enumerate() {
        let statuses: Vec<&String> = seen.iter().filter(|e| &e.uid == uid).map(|e| &e.status).collect();
        let mut rest = statuses.iter();
        for expected in &told[user] {
            assert!(
                rest.any(|status| *status == expected),
                "user {user}: {expected} (of {:?}) is missing from what the app saw: {statuses:?}",
                told[user]
            );
        }
    }
    drop(follower);
    server.kill9().await;
}
