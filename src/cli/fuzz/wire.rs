//! Frames over real WebSockets to a node this process starts on a temporary SQLite directory;
//! any panic in the node counts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::frames::{frame, matches, opening, wire_only, Conn, Expect, Opening, Rng};
use super::{BoxError, Tally};
use crate::cli::client::{DeviceClient, Received};
use crate::config::Config;
use crate::ops::{accounts, devices};

/// What the server sent in answer to one frame: JSON texts, then `close N` if it closed.
pub(super) async fn wire_answer(device: &mut DeviceClient, expect: &Expect) -> Vec<String> {
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

pub(super) async fn fuzz_connection(
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
pub(super) fn count_panics() -> Arc<AtomicUsize> {
    let panics = Arc::new(AtomicUsize::new(0));
    let counter = panics.clone();
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counter.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));
    panics
}

pub(super) const WORKERS: usize = 8;

pub(super) async fn run_wire(frames: usize, seed: u64) -> Result<(Tally, usize), BoxError> {
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
