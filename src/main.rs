//! The `presence` binary: loads configuration, builds the app and runs it until a signal.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use presence::config::{Config, LogFormat};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "presence", version, about = "Share whether you can be reached right now, over SimplePush")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(Settings),
    /// Apply database migrations and exit.
    Migrate(Settings),
}

/// Every setting of `presence.sample.toml`, as flags. Unset flags leave lower layers alone.
#[derive(Args)]
struct Settings {
    /// A TOML configuration file (see presence.sample.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Log as JSON lines (same as log_format = "json").
    #[arg(long)]
    log_json: bool,
    #[arg(long)]
    listen: Option<String>,
    #[arg(long)]
    data_dir: Option<String>,
    #[arg(long)]
    database_url: Option<String>,
    #[arg(long)]
    public_url: Option<String>,
    #[arg(long)]
    log_format: Option<String>,
    #[arg(long)]
    sqlite_synchronous: Option<String>,
    #[arg(long)]
    hello_timeout: Option<String>,
    #[arg(long)]
    ping_min_interval: Option<String>,
    #[arg(long)]
    ws_ping_interval: Option<String>,
    #[arg(long)]
    ws_pong_timeout: Option<String>,
    #[arg(long)]
    shutdown_grace: Option<String>,
    #[arg(long)]
    max_message_size: Option<String>,
    #[arg(long)]
    ws_read_buffer: Option<String>,
    #[arg(long)]
    ws_write_buffer_max: Option<String>,
    #[arg(long)]
    outbound_queue: Option<String>,
    #[arg(long)]
    max_channels_per_uaid: Option<String>,
    #[arg(long)]
    max_stored_per_uaid: Option<String>,
    #[arg(long)]
    max_update_body: Option<String>,
}

impl Settings {
    fn flags(&self) -> Vec<(&'static str, String)> {
        let mut flags: Vec<(&'static str, String)> = [
            ("listen", &self.listen),
            ("data_dir", &self.data_dir),
            ("database_url", &self.database_url),
            ("public_url", &self.public_url),
            ("log_format", &self.log_format),
            ("sqlite_synchronous", &self.sqlite_synchronous),
            ("hello_timeout", &self.hello_timeout),
            ("ping_min_interval", &self.ping_min_interval),
            ("ws_ping_interval", &self.ws_ping_interval),
            ("ws_pong_timeout", &self.ws_pong_timeout),
            ("shutdown_grace", &self.shutdown_grace),
            ("max_message_size", &self.max_message_size),
            ("ws_read_buffer", &self.ws_read_buffer),
            ("ws_write_buffer_max", &self.ws_write_buffer_max),
            ("outbound_queue", &self.outbound_queue),
            ("max_channels_per_uaid", &self.max_channels_per_uaid),
            ("max_stored_per_uaid", &self.max_stored_per_uaid),
            ("max_update_body", &self.max_update_body),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key, value.clone()?)))
        .collect();
        if self.log_json {
            flags.push(("log_format", "json".to_owned()));
        }
        flags
    }

    fn load(&self) -> Result<Config, String> {
        let text = match &self.config {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read the configuration file {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let file = self.config.as_deref().zip(text.as_deref());
        Config::load(file, std::env::vars(), self.flags()).map_err(|e| e.to_string())
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match &cli.command {
        Command::Serve(settings) | Command::Migrate(settings) => settings,
    };
    let config = match settings.load() {
        Ok(config) => config,
        Err(sentence) => {
            eprintln!("presence: {sentence}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("presence: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(_) => serve(config).await,
            Command::Migrate(_) => migrate(config).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("presence: {}", presence::error::chain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

async fn serve(config: Config) -> Result<(), BoxError> {
    let app = presence::app::build(config).await?;
    let addr = app.local_addr();
    // Scripts and tests read this line to learn the port when listening on port 0.
    println!("presence listening on http://{addr}");
    tracing::info!(%addr, "listening");
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    app.run(shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn migrate(config: Config) -> Result<(), BoxError> {
    let store = presence::store::open(&config.database_url(), &config).await?;
    store.close().await;
    println!("migrations applied to {}", presence::config::redact_url(&config.database_url()));
    Ok(())
}

async fn signal_shutdown(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}
