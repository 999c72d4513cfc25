//! The real binary: `presence serve` for tests that kill it with SIGKILL, and the CLI commands.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};

use super::data::store_flags;
use super::service::DeviceClient;

/// The real binary, running on a data dir; killed with SIGKILL when dropped.
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub addr: std::net::SocketAddr,
}

/// The real binary, with no `PRESENCE_*` variable inherited from the test's environment.
pub fn presence_command() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_presence"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("PRESENCE_")) {
        command.env_remove(name);
    }
    command
}

/// Runs a `presence` command on a data directory with `stdin` as its input; returns its output.
pub async fn cli(args: &[&str], dir: &Path, stdin: &str) -> String {
    use tokio::io::AsyncWriteExt as _;
    let mut child = presence_command()
        .args(args)
        .args(store_flags(dir).await)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).await.unwrap();
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success(), "presence {args:?} failed");
    String::from_utf8(output.stdout).unwrap()
}

/// How a `presence` command ended: its exit code, standard output and standard error.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a `presence` command on a data directory, whatever its outcome.
pub async fn cli_run(args: &[&str], dir: &Path) -> Ran {
    let output = presence_command()
        .args(args)
        .args(store_flags(dir).await)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// `presence serve` on a data directory, with these extra flags; returns once it listens.
pub async fn spawn_process(dir: &Path, extra: &[&str]) -> ServerProcess {
    spawn_process_logging(dir, extra, std::process::Stdio::null()).await
}

/// `spawn_process` with its standard error (the logs) going to `stderr`.
pub async fn spawn_process_logging(dir: &Path, extra: &[&str], stderr: std::process::Stdio) -> ServerProcess {
    spawn_process_in(presence_command(), dir, extra, stderr).await
}

/// `spawn_process_logging` from a command the caller prepared (its environment, say).
pub async fn spawn_process_in(
    mut command: tokio::process::Command,
    dir: &Path,
    extra: &[&str],
    stderr: std::process::Stdio,
) -> ServerProcess {
    let mut child = command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(store_flags(dir).await)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the server prints its address")
        .unwrap()
        .expect("a line on stdout");
    let addr = line
        .rsplit("http://")
        .next()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    ServerProcess { child, addr }
}

impl ServerProcess {
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// `http://host:port`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A WebSocket that has not said hello yet.
    pub async fn connect(&self) -> DeviceClient {
        DeviceClient::connect(&self.ws_url()).await.unwrap()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub async fn kill9(mut self) {
        self.child.kill().await.unwrap();
    }
}
