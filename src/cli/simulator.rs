//! `presence device`: a simulated device. It signs in, registers a device (or reuses one from
//! `--prid-file`), connects, and reports statuses on a schedule or from the keyboard, printing
//! every message it sends (`>`) and receives (`<`).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::cli::client::{DeviceClient, Received};

pub struct Options {
    /// `http://host:port` of the Presence server.
    pub server: String,
    pub email: String,
    pub password: String,
    pub name: String,
    /// Where the device's PrID is kept between runs (created if missing).
    pub prid_file: Option<PathBuf>,
    /// Statuses to cycle through, each held for its duration; empty means the keyboard.
    pub schedule: Vec<(String, Duration)>,
    /// Re-send the current status this often, so a quiet device is not swept offline.
    pub refresh: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    #[error("http request failed")]
    Http(#[from] reqwest::Error),
    #[error("the server refused: {0}")]
    Refused(String),
    #[error("device connection failed")]
    Client(#[from] crate::cli::client::ClientError),
    #[error("cannot use the PrID file")]
    File(#[from] std::io::Error),
}

/// Parses `O:5s,A:10s,U:5s`.
pub fn parse_schedule(text: &str) -> Result<Vec<(String, Duration)>, String> {
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (status, duration) =
                part.trim().split_once(':').ok_or(format!("{part:?} is not STATUS:DURATION"))?;
            if !matches!(status, "O" | "A" | "U") {
                return Err(format!("status {status:?} must be O, A or U"));
            }
            let duration = humantime::parse_duration(duration).map_err(|e| format!("{duration:?}: {e}"))?;
            Ok((status.to_owned(), duration))
        })
        .collect()
}

async fn post(
    http: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: Value,
) -> Result<Value, SimulatorError> {
    let mut request = http.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(SimulatorError::Refused(format!("{status}: {}", body["detail"].as_str().unwrap_or(""))));
    }
    Ok(body)
}

async fn prid(options: &Options, http: &reqwest::Client) -> Result<String, SimulatorError> {
    if let Some(path) = &options.prid_file {
        if let Ok(text) = tokio::fs::read_to_string(path).await {
            println!("# using the device in {}", path.display());
            return Ok(text.trim().to_owned());
        }
    }
    let server = options.server.trim_end_matches('/');
    let token = post(
        http,
        format!("{server}/v1/tokens"),
        None,
        json!({"email": options.email, "password": options.password}),
    )
    .await?;
    let token = token["token"].as_str().unwrap_or_default().to_owned();
    println!("# signed in as {}", options.email);
    let device =
        post(http, format!("{server}/v1/devices"), Some(&token), json!({"name": options.name})).await?;
    println!("# registered device {} ({})", device["device_id"].as_str().unwrap_or("?"), options.name);
    let prid = device["prid"].as_str().unwrap_or_default().to_owned();
    if let Some(path) = &options.prid_file {
        write_private(path, &prid)?;
        println!("# its presence id is kept in {}", path.display());
    }
    Ok(prid)
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}

pub async fn run(options: Options) -> Result<(), SimulatorError> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let prid = prid(&options, &http).await?;
    let ws_url = format!(
        "{}/",
        options
            .server
            .trim_end_matches('/')
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1)
    );
    let mut device = DeviceClient::connect(&ws_url).await?;
    let hello = json!({"messageType": "hello", "uaid": "", "channelIDs": [], "xpi": "<your presence id>"});
    println!("> {hello}");
    let reply = device.hello_presence(None, &prid).await?;
    println!("< {reply}");
    if reply["status"] != 200 {
        return Err(SimulatorError::Refused(reply.to_string()));
    }
    if options.schedule.is_empty() {
        println!("# type o (online), a (away), u (unavailable) or q (quit), then Enter");
    }

    let mut keyboard = BufReader::new(tokio::io::stdin()).lines();
    let mut step = 0usize;
    let mut current: Option<String> = None;
    let mut next_change = tokio::time::Instant::now();
    let mut next_refresh = tokio::time::Instant::now() + options.refresh;
    loop {
        let scheduled = !options.schedule.is_empty();
        tokio::select! {
            () = tokio::time::sleep_until(next_change), if scheduled => {
                let (status, hold) = &options.schedule[step % options.schedule.len()];
                step += 1;
                next_change += *hold;
                send_status(&mut device, status).await?;
                current = Some(status.clone());
            }
            () = tokio::time::sleep_until(next_refresh) => {
                next_refresh += options.refresh;
                if let Some(status) = current.clone() {
                    send_status(&mut device, &status).await?;
                }
            }
            line = keyboard.next_line(), if !scheduled => {
                let Some(line) = line? else { break };
                let status = match line.trim().to_ascii_lowercase().as_str() {
                    "o" => "O",
                    "a" => "A",
                    "u" => "U",
                    "q" => break,
                    "" => continue,
                    other => {
                        println!("# {other:?}: type o, a, u or q");
                        continue;
                    }
                };
                send_status(&mut device, status).await?;
                current = Some(status.to_owned());
            }
            received = device.recv_within(Duration::from_secs(3600)) => {
                match received? {
                    Some(Received::Message(message)) => {
                        println!("< {message}");
                        acknowledge(&mut device, &message).await?;
                    }
                    Some(Received::Closed { code, reason }) => {
                        println!("# closed by the server: {code:?} {reason}");
                        return Ok(());
                    }
                    None => {}
                }
            }
        }
    }
    device.close().await?;
    Ok(())
}

async fn send_status(device: &mut DeviceClient, status: &str) -> Result<(), SimulatorError> {
    let message = json!({"messageType": "ping", "xps": status});
    println!("> {message}");
    device.send_json(&message).await?;
    Ok(())
}

/// Shows live notifications, and acks them and SimplePush updates as a well-behaved device does.
async fn acknowledge(device: &mut DeviceClient, message: &Value) -> Result<(), SimulatorError> {
    if message["messageType"] != "notification" {
        return Ok(());
    }
    if let Some(updates) = message["updates"].as_array().filter(|u| !u.is_empty()) {
        let ack = json!({"messageType": "ack", "updates": updates});
        println!("> {ack}");
        device.send_json(&ack).await?;
    }
    if let Some(live) = message["xpn"].as_array().filter(|n| !n.is_empty()) {
        for notification in live {
            println!(
                "# notification from {}: {} — {}",
                notification["app"].as_str().unwrap_or("?"),
                notification["title"].as_str().unwrap_or(""),
                notification["body"].as_str().unwrap_or("")
            );
        }
        let ids: Vec<&Value> = live.iter().map(|n| &n["id"]).collect();
        let ack = json!({"messageType": "ack", "xpn": ids});
        println!("> {ack}");
        device.send_json(&ack).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_bad_ones_are_explained() {
        let schedule = parse_schedule("O:5s, A:1m,U:500ms").unwrap();
        assert_eq!(schedule[1], ("A".to_owned(), Duration::from_secs(60)));
        assert!(parse_schedule("X:5s").unwrap_err().contains("must be O, A or U"));
        assert!(parse_schedule("O").unwrap_err().contains("STATUS:DURATION"));
    }
}
