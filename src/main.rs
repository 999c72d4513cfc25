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
    /// Manage local accounts.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Register apps.
    #[command(subcommand)]
    App(AppCommand),
    /// A simulated device: signs in, registers, connects and reports statuses.
    Device(DeviceArgs),
    /// Load-test a node started for the purpose, and print the figures (see docs/benchmarks.md).
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// Devices connected (each its own user, granted to one app).
    #[arg(long, default_value_t = 15000)]
    devices: usize,
    /// Aggregate status changes per second.
    #[arg(long, default_value_t = 5000)]
    rate: u32,
    /// How long the set rate is held.
    #[arg(long, default_value = "10s")]
    duration: String,
    /// Runs (each on a fresh server); figures are their median, min and max.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Devices dropped at once at the end of a run.
    #[arg(long, default_value_t = 10000)]
    drop: usize,
    /// Skip the search for the highest sustained rate.
    #[arg(long)]
    no_ramp: bool,
    /// Run on PostgreSQL (`postgres://…`; the bench seeds a schema of its own) instead of SQLite.
    #[arg(long)]
    database_url: Option<String>,
    /// Nodes (2 or more: a cluster on `--database-url` and a NATS server the bench starts);
    /// devices connect to the first, the stream consumer to the last.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
}

#[derive(Subcommand)]
enum AppCommand {
    /// Register an app owned by a local account; prints its id and secrets (shown once).
    Create {
        /// Email of the owning account.
        #[arg(long)]
        owner: String,
        #[arg(long)]
        name: String,
        /// An exact redirect URI (https, or http on loopback); repeat for several.
        #[arg(long = "redirect-uri", required = true)]
        redirect_uris: Vec<String>,
        #[arg(long, default_value = "")]
        webhook_url: String,
        #[command(flatten)]
        settings: Settings,
    },
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Create a local account; the password is read from the first line of standard input.
    Add {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        settings: Settings,
    },
}

#[derive(Args)]
struct DeviceArgs {
    /// The Presence server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    #[arg(long)]
    email: String,
    #[arg(long)]
    password: String,
    /// The device's name, shown on the user's settings.
    #[arg(long, default_value = "simulated device")]
    name: String,
    /// Keep the device's presence id here, to be the same device next time.
    #[arg(long)]
    prid_file: Option<PathBuf>,
    /// Statuses to cycle through, e.g. "O:10s,A:20s,U:5s"; without it, read o/a/u/q from the keyboard.
    #[arg(long)]
    schedule: Option<String>,
    /// Re-send the current status this often.
    #[arg(long, default_value = "10m")]
    refresh: String,
}

/// `--config FILE`, `--log-json`, and every key of `presence.sample.toml` as a flag
/// (`max_channels_per_uaid` is `--max-channels-per-uaid`). Unset flags leave lower layers alone.
#[derive(Clone)]
struct Settings {
    config: Option<PathBuf>,
    flags: Vec<(&'static str, String)>,
}

/// The configuration keys with their flags, in the sample's order; made once and kept for
/// the life of the process, so clap can borrow them.
fn setting_keys() -> &'static [(&'static str, &'static str)] {
    static KEYS: std::sync::OnceLock<Vec<(&'static str, &'static str)>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        presence::config::DEFAULTS
            .lines()
            .filter_map(|line| line.split_once('=').map(|(key, _)| key.trim()))
            .filter(|key| !key.is_empty() && !key.starts_with('#'))
            .map(|key| {
                let flag: &'static str = Box::leak(key.replace('_', "-").into_boxed_str());
                (&*Box::leak(key.to_owned().into_boxed_str()), flag)
            })
            .collect()
    })
}

impl clap::FromArgMatches for Settings {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut flags: Vec<(&'static str, String)> = setting_keys()
            .iter()
            .filter_map(|(key, _)| Some((*key, matches.get_one::<String>(key)?.clone())))
            .collect();
        if matches.get_flag("log_json") {
            flags.push(("log_format", "json".to_owned()));
        }
        Ok(Settings { config: matches.get_one::<PathBuf>("config").cloned(), flags })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for Settings {
    fn augment_args(command: clap::Command) -> clap::Command {
        let command = command
            .arg(
                clap::Arg::new("config")
                    .long("config")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("A TOML configuration file (see presence.sample.toml)"),
            )
            .arg(
                clap::Arg::new("log_json")
                    .long("log-json")
                    .action(clap::ArgAction::SetTrue)
                    .help("Log as JSON lines (log_format = \"json\")"),
            );
        setting_keys().iter().fold(command, |command, (key, flag)| {
            command.arg(
                clap::Arg::new(*key)
                    .long(*flag)
                    .value_name("VALUE")
                    .help(format!("Setting {key} (see presence.sample.toml)")),
            )
        })
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

impl Settings {
    fn load(&self) -> Result<Config, String> {
        let text = match &self.config {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read the configuration file {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let file = self.config.as_deref().zip(text.as_deref());
        Config::load(file, std::env::vars(), self.flags.clone()).map_err(|e| e.to_string())
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
        Command::Account(AccountCommand::Add { settings, .. }) => settings,
        Command::App(AppCommand::Create { settings, .. }) => settings,
        Command::Device(args) => return device(args),
        Command::Bench(args) => return bench(args),
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
            Command::Account(AccountCommand::Add { email, .. }) => add_account(config, &email).await,
            Command::App(AppCommand::Create { owner, name, redirect_uris, webhook_url, .. }) => {
                create_app(config, &owner, &name, &redirect_uris, &webhook_url).await
            }
            Command::Device(_) | Command::Bench(_) => unreachable!("handled before configuration"),
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
    let store =
        presence::store::open(&config.database_url(), &config, &presence::cluster::new_node_id()).await?;
    store.close().await;
    println!("migrations applied to {}", presence::config::redact_url(&config.database_url()));
    Ok(())
}

async fn add_account(config: Config, email: &str) -> Result<(), BoxError> {
    let email = presence::api::normalize_email(email).ok_or("that is not an email address")?;
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']).to_owned();
    if password.chars().count() < 8 {
        return Err("the password (first line of standard input) must have at least 8 characters".into());
    }
    let store =
        presence::store::open(&config.database_url(), &config, &presence::cluster::new_node_id()).await?;
    let hash = tokio::task::spawn_blocking(move || presence::secrets::hash_password(&password)).await?;
    let created = store.create_local_account(&email, &hash, presence::ws::unix_now()).await?;
    store.close().await;
    match created {
        Some(_) => {
            println!("account {email} created");
            Ok(())
        }
        None => Err(format!("an account for {email} already exists").into()),
    }
}

async fn create_app(
    config: Config,
    owner: &str,
    name: &str,
    redirect_uris: &[String],
    webhook_url: &str,
) -> Result<(), BoxError> {
    let listen = config.listen;
    let state = presence::app::open_state(config, listen).await?;
    let email = presence::api::normalize_email(owner).ok_or("--owner is not an email address")?;
    let account = state
        .store
        .local_credentials(&email)
        .await?
        .map(|(account, _)| account)
        .ok_or_else(|| format!("no local account {email}; create it with presence account add"))?;
    let created = presence::apps::register_app(&state, account, name, redirect_uris, webhook_url)
        .await
        .map_err(|error| error.detail)?;
    state.store.close().await;
    println!("app_id          {}", created.app_id);
    println!("secret          {}", created.secret);
    println!("webhook_secret  {}", created.webhook_secret);
    println!("(the secrets are shown only now)");
    Ok(())
}

fn bench(args: &BenchArgs) -> ExitCode {
    let Ok(duration) = humantime::parse_duration(&args.duration) else {
        eprintln!("presence: --duration must be a duration like 10s");
        return ExitCode::from(2);
    };
    if args.devices == 0 || args.rate == 0 || args.runs == 0 || args.nodes == 0 {
        eprintln!("presence: --devices, --rate, --runs and --nodes must be at least 1");
        return ExitCode::from(2);
    }
    if args.nodes > 1 && args.database_url.is_none() {
        eprintln!("presence: --nodes above 1 needs --database-url postgres://…");
        return ExitCode::from(2);
    }
    let options = presence::bench::Options {
        devices: args.devices,
        rate: args.rate,
        duration,
        runs: args.runs,
        drop: args.drop,
        ramp: !args.no_ramp,
        database_url: args.database_url.clone(),
        nodes: args.nodes,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("presence: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(presence::bench::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("presence: bench failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn device(args: &DeviceArgs) -> ExitCode {
    let schedule = match args.schedule.as_deref().map(presence::simulator::parse_schedule).transpose() {
        Ok(schedule) => schedule.unwrap_or_default(),
        Err(sentence) => {
            eprintln!("presence: --schedule: {sentence}");
            return ExitCode::from(2);
        }
    };
    let refresh = match humantime::parse_duration(&args.refresh) {
        Ok(refresh) if !refresh.is_zero() => refresh,
        _ => {
            eprintln!("presence: --refresh must be a duration like 10m");
            return ExitCode::from(2);
        }
    };
    let options = presence::simulator::Options {
        server: args.server.clone(),
        email: args.email.clone(),
        password: args.password.clone(),
        name: args.name.clone(),
        prid_file: args.prid_file.clone(),
        schedule,
        refresh,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("presence: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(presence::simulator::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("presence: {}", presence::error::chain(&error));
            ExitCode::FAILURE
        }
    }
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
