//! The operator's verbs on accounts and apps: `list`, `disable`, `enable`, `delete`. Lists read
//! the store. Changes go to the running node through its control socket (`presence.sock` in the
//! data directory) when one listens there, since a lone node holds presence in memory; with no
//! node there (or on another machine of a cluster) they run here, on the store and the bus.
//!
//! Output is a table, or JSON with `--json`. Exit codes: 0 done, 1 not found (or another failure,
//! said on stderr), 2 a usage error.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use super::settings::Settings;
use crate::config::Config;
use crate::ops::{lifecycle, Core};

#[derive(Args)]
pub struct Target {
    /// The account's email or number (see `list`); for apps, the app id.
    pub name: String,
    /// Print JSON instead of a sentence.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Args)]
pub struct Listing {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub settings: Settings,
}

/// What the operator does to an account or an app.
#[derive(Subcommand)]
pub enum Verb {
    /// Disable: it can no longer sign in (an app: its API and stream answer 403, no webhooks);
    /// its sessions end and its devices are closed and offline.
    Disable(Target),
    /// Enable again what was disabled.
    Enable(Target),
    /// Delete for good, with everything that hangs from it.
    Delete(Target),
}

impl Verb {
    pub fn settings(&self) -> &Settings {
        match self {
            Verb::Disable(target) | Verb::Enable(target) | Verb::Delete(target) => &target.settings,
        }
    }
}

/// Accounts or apps.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Account,
    App,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Account => "account",
            Kind::App => "app",
        }
    }
}

/// How an operator verb ended.
pub enum Outcome {
    Done,
    NotFound(String),
    Failed(String),
}

impl Outcome {
    pub fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Done => ExitCode::SUCCESS,
            Outcome::NotFound(sentence) | Outcome::Failed(sentence) => {
                eprintln!("presence: {sentence}");
                ExitCode::FAILURE
            }
        }
    }
}

fn failed(error: impl std::fmt::Display) -> Outcome {
    Outcome::Failed(error.to_string())
}

/// `presence account list` / `presence app list`.
pub async fn list(config: Config, kind: Kind, as_json: bool) -> Outcome {
    let core = match open(config).await {
        Ok(core) => core,
        Err(outcome) => return outcome,
    };
    let listed = match kind {
        Kind::Account => lifecycle::list_accounts(&core).await.map(|accounts| {
            if as_json {
                return serde_json::to_string_pretty(&json!({ "accounts": accounts })).unwrap_or_default();
            }
            let rows = accounts.iter().map(|a| {
                vec![
                    a.id.0.to_string(),
                    a.email.clone().or_else(|| a.subject.clone()).unwrap_or_default(),
                    a.issuer.clone().unwrap_or_else(|| "local".to_owned()),
                    crate::http::web::format_time(a.created_at),
                    a.disabled_at.map_or_else(|| "no".to_owned(), crate::http::web::format_time),
                    a.devices.to_string(),
                    a.apps.to_string(),
                ]
            });
            table(
                &["ID", "EMAIL OR SUBJECT", "SIGNS IN WITH", "CREATED", "DISABLED", "DEVICES", "APPS"],
                rows,
            )
        }),
        Kind::App => lifecycle::list_apps(&core).await.map(|apps| {
            if as_json {
                return serde_json::to_string_pretty(&json!({ "apps": apps })).unwrap_or_default();
            }
            let rows = apps.iter().map(|a| {
                vec![
                    a.app_id.clone(),
                    a.name.clone(),
                    a.owner_email.clone().unwrap_or_else(|| a.owner.0.to_string()),
                    crate::http::web::format_time(a.created_at),
                    a.disabled_at.map_or_else(|| "no".to_owned(), crate::http::web::format_time),
                    a.grants.to_string(),
                ]
            });
            table(&["APP ID", "NAME", "OWNER", "CREATED", "DISABLED", "GRANTS"], rows)
        }),
    };
    core.store.close().await;
    match listed {
        Ok(text) => {
            println!("{text}");
            Outcome::Done
        }
        Err(error) => failed(crate::error::chain(&error)),
    }
}

/// `presence account|app disable|enable|delete NAME`.
pub async fn change(config: Config, kind: Kind, verb: &Verb) -> Outcome {
    let (target, action) = match verb {
        Verb::Disable(target) => (target, "disable"),
        Verb::Enable(target) => (target, "enable"),
        Verb::Delete(target) => (target, "delete"),
    };
    let socket = crate::http::control::socket_path(&config.data_dir);
    let outcome = match tokio::net::UnixStream::connect(&socket).await {
        Ok(stream) => through_socket(stream, kind, action, &target.name).await,
        // No node runs on this data directory: act on the store here.
        Err(_) => directly(config, kind, action, &target.name, &socket).await,
    };
    if matches!(outcome, Outcome::Done) {
        let past = match action {
            "disable" => "disabled",
            "enable" => "enabled",
            _ => "deleted",
        };
        if target.json {
            println!("{}", json!({ kind.word(): target.name, "done": past }));
        } else {
            println!("{} {} {past}", kind.word(), target.name);
        }
    }
    outcome
}

async fn directly(config: Config, kind: Kind, action: &str, name: &str, socket: &std::path::Path) -> Outcome {
    let core = match open(config).await {
        Ok(core) => core,
        Err(outcome) => return outcome,
    };
    // A lone node holds presence in memory: a change written beside it would be overwritten, and
    // seqs it hands out would collide with ours. Only in a cluster (the store is the truth, the
    // bus reaches the nodes) may a change be made from outside a node.
    if !core.is_clustered() {
        match core.store.live_nodes(crate::clock::unix_now()).await {
            Ok(0) => {}
            Ok(_) => {
                core.store.close().await;
                return Outcome::Failed(format!(
                    "a node is running on this database but its control socket {} does not answer; \
                     run this where that node runs (with its data_dir), or stop it first (a node that \
                     died holds its lease for node_lease)",
                    socket.display()
                ));
            }
            Err(error) => {
                core.store.close().await;
                return failed(crate::error::chain(&error));
            }
        }
    }
    let result = match kind {
        Kind::Account => match lifecycle::find_account(&core, name).await {
            Ok(account) => match action {
                "disable" => lifecycle::set_account_disabled(&core, account, true).await,
                "enable" => lifecycle::set_account_disabled(&core, account, false).await,
                _ => lifecycle::delete_account(&core, account).await,
            },
            Err(error) => Err(error),
        },
        Kind::App => match action {
            "disable" => lifecycle::set_app_disabled(&core, name, true).await,
            "enable" => lifecycle::set_app_disabled(&core, name, false).await,
            _ => lifecycle::delete_app(&core, name).await,
        },
    };
    // The nodes hear of it (devices to close, streams to end) before this process exits.
    if tokio::time::timeout(std::time::Duration::from_secs(5), core.bus.flush()).await.is_err() {
        tracing::warn!("the bus did not take the signals within 5 s; nodes may not hear of the change until devices reconnect");
    }
    core.store.close().await;
    match result {
        Ok(()) => Outcome::Done,
        Err(crate::ops::Error::NotFound(_)) => Outcome::NotFound(format!("no {} {name}", kind.word())),
        Err(error) => failed(crate::error::chain(&error)),
    }
}

/// One HTTP/1.1 request to the running node's control socket.
async fn through_socket(mut stream: tokio::net::UnixStream, kind: Kind, action: &str, name: &str) -> Outcome {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let name_in_path: String = form_urlencoded::byte_serialize(name.as_bytes()).collect();
    let (method, path) = match action {
        "delete" => ("DELETE", format!("/{}s/{name_in_path}", kind.word())),
        _ => ("POST", format!("/{}s/{name_in_path}/{action}", kind.word())),
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: presence\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut response = Vec::new();
    let exchanged = async {
        stream.write_all(request.as_bytes()).await?;
        stream.read_to_end(&mut response).await
    };
    if let Err(error) = exchanged.await {
        return failed(format!("the running node's control socket failed: {error}"));
    }
    let response = String::from_utf8_lossy(&response);
    let status = response.split(' ').nth(1).and_then(|code| code.parse::<u16>().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let detail = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["detail"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("the running node answered {status}"));
    match status {
        200..=299 => Outcome::Done,
        404 => Outcome::NotFound(format!("no {} {name}", kind.word())),
        _ => Outcome::Failed(detail),
    }
}

async fn open(config: Config) -> Result<Core, Outcome> {
    let listen = config.listen;
    crate::app::open(config, listen)
        .await
        .map(|parts| parts.core)
        .map_err(|error| failed(crate::error::chain(&error)))
}

/// Left-aligned columns, two spaces apart.
fn table(headers: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| rows.iter().map(|row| row[i].chars().count()).chain([headers[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut lines = vec![line(headers.to_vec())];
    lines.extend(rows.iter().map(|row| line(row.iter().map(String::as_str).collect())));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_line_up() {
        let rows =
            vec![vec!["1".to_owned(), "bob@example.com".to_owned()], vec!["22".to_owned(), "x".to_owned()]];
        assert_eq!(super::table(&["ID", "EMAIL"], rows.into_iter()), "ID  EMAIL\n1   bob@example.com\n22  x");
    }
}
