//! The `presence` command line: `serve`, `migrate`, the operator's `account` and `app` verbs, a
//! simulated `device`, the `bench` load generator, and the `demo`. Every verb runs on one runtime,
//! started once, and calls the same operations as the HTTP API.

pub mod bench;
pub mod client;
pub mod demo;
pub mod fuzz;
pub mod operator;
pub mod settings;
pub mod simulator;
mod webhook_ranges;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use self::settings::Settings;
use crate::config::{Config, LogFormat};
use crate::domain::EventFormat;
use crate::ops::accounts;
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
    /// Manage accounts: add a local one, list, disable, enable, delete.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Manage apps: register one, list, disable, enable, delete.
    #[command(subcommand)]
    App(AppCommand),
    /// A simulated device: signs in, registers, connects and reports statuses.
    Device(DeviceArgs),
    /// Load-test a node started for the purpose, and print the figures (see docs/benchmarks.md).
    Bench(BenchArgs),
    /// Send structured random frames through the session and over real sockets to a node
    /// started for the purpose; fail if any is answered otherwise than documented.
    Fuzz(FuzzArgs),
    /// Presence, the example app appmaker and simulated users on a temporary directory: prints
    /// the URL to open in a browser.
    Demo(demo::Options),
}

#[derive(Args)]
struct FuzzArgs {
    /// Frames through the session's state machine (no sockets).
    #[arg(long, default_value_t = 1_000_000)]
    frames: usize,
    /// Frames over real WebSockets to a node on a temporary SQLite directory (0: none).
    #[arg(long, default_value_t = 20_000)]
    wire: usize,
    /// Seed of the generator (random when not given); the same seed sends the same frames.
    #[arg(long)]
    seed: Option<u64>,
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
    /// How often the generator sends what is due: each tick sends rate × tick changes at once
    /// (`bench/peers.sh` passes 10ms, the tick of the MQTT generator it drives Mosquitto with).
    #[arg(long, default_value = "1ms")]
    tick: String,
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
        /// How webhook bodies are written: pairs (the default) or v1 (the Standard Webhooks envelope).
        #[arg(long, default_value = "pairs", value_parser = ["pairs", "v1"])]
        webhook_format: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// Let one app's webhooks reach non-public ranges (the operator's choice; see webhook_allow).
    AllowWebhookRange(webhook_ranges::AllowWebhookRange),
    /// Every app: id, name, owner, when created and disabled, how many users granted it.
    List(operator::Listing),
    #[command(flatten)]
    Change(operator::Verb),
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
    /// Every account: number, email (or subject), how it signs in, when created and disabled,
    /// its devices and apps.
    List(operator::Listing),
    #[command(flatten)]
    Change(operator::Verb),
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

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// What the command line asked for, checked before the runtime starts.
enum Job {
    Serve(Config),
    Migrate(Config),
    AddAccount(Config, String),
    CreateApp {
        config: Config,
        owner: String,
        name: String,
        redirect_uris: Vec<String>,
        webhook_url: String,
        webhook_format: EventFormat,
    },
    AllowWebhookRange(Config, webhook_ranges::AllowWebhookRange),
    Device(simulator::Options),
    Bench(bench::Options),
    Fuzz(fuzz::Options),
    List(Config, operator::Kind, bool),
    Change(Config, operator::Kind, operator::Verb),
    Demo(demo::Options),
}

/// Parses the command line, runs the verb, and says how it ended (2 for a usage error).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve(_)) {
        one_malloc_arena();
    }
    let job = match prepare(cli) {
        Ok(job) => job,
        Err(sentence) => {
            eprintln!("presence: {sentence}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("presence: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let job = match job {
        Job::List(config, kind, json) => {
            return runtime.block_on(operator::list(config, kind, json)).exit_code()
        }
        Job::Change(config, kind, verb) => {
            return runtime.block_on(operator::change(config, kind, &verb)).exit_code()
        }
        job => job,
    };
    let bench = matches!(job, Job::Bench(_));
    match runtime.block_on(run(job)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if bench => {
            eprintln!("presence: bench failed: {error}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("presence: {}", crate::error::chain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// The environment variable that bounds glibc's malloc arenas.
const MALLOC_ARENA_MAX: &str = "MALLOC_ARENA_MAX";

/// Restarts the server in place (same process id, same arguments) with glibc's malloc held to
/// one arena, unless the operator set `MALLOC_ARENA_MAX` already. By default glibc gives every
/// thread that allocates an arena of its own (the runtime's workers, each SQLite connection's
/// thread), and each arena keeps its own high-water mark of freed memory: an idle device cost
/// about 3,550 bytes with them and 2,740 with one (docs/benchmarks.md, session 8). Where the
/// restart cannot happen, the server goes on as it is.
fn one_malloc_arena() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) || std::env::var_os(MALLOC_ARENA_MAX).is_some() {
        return;
    }
    use std::os::unix::process::CommandExt as _;
    let Ok(exe) = std::env::current_exe() else { return };
    let error =
        std::process::Command::new(exe).args(std::env::args_os().skip(1)).env(MALLOC_ARENA_MAX, "1").exec();
    eprintln!("presence: cannot restart with one malloc arena ({error}); going on with glibc's default");
}

fn prepare(cli: Cli) -> Result<Job, String> {
    let settings = match &cli.command {
        Command::Serve(settings) | Command::Migrate(settings) => settings,
        Command::Account(AccountCommand::Add { settings, .. }) => settings,
        Command::App(AppCommand::Create { settings, .. }) => settings,
        Command::App(AppCommand::AllowWebhookRange(args)) => &args.settings,
        Command::Account(AccountCommand::List(listing)) | Command::App(AppCommand::List(listing)) => {
            &listing.settings
        }
        Command::Account(AccountCommand::Change(verb)) | Command::App(AppCommand::Change(verb)) => {
            verb.settings()
        }
        Command::Device(args) => return device_options(args).map(Job::Device),
        Command::Bench(args) => return bench_options(args).map(Job::Bench),
        Command::Demo(options) => return Ok(Job::Demo(options.clone())),
        Command::Fuzz(args) => {
            let seed = args.seed.unwrap_or_else(rand::random);
            return Ok(Job::Fuzz(fuzz::Options { frames: args.frames, wire: args.wire, seed }));
        }
    };
    let config = settings.load()?;
    init_logging(config.log_format);
    for name in &config.ignored_env {
        tracing::warn!(variable = %name, "ignoring an environment variable that names no setting");
    }
    Ok(match cli.command {
        Command::Serve(_) => Job::Serve(config),
        Command::Migrate(_) => Job::Migrate(config),
        Command::Account(AccountCommand::Add { email, .. }) => Job::AddAccount(config, email),
        Command::App(AppCommand::Create {
            owner, name, redirect_uris, webhook_url, webhook_format, ..
        }) => {
            let webhook_format = EventFormat::parse(&webhook_format).unwrap_or_default();
            Job::CreateApp { config, owner, name, redirect_uris, webhook_url, webhook_format }
        }
        Command::App(AppCommand::AllowWebhookRange(args)) => Job::AllowWebhookRange(config, args),
        Command::Account(AccountCommand::List(listing)) => {
            Job::List(config, operator::Kind::Account, listing.json)
        }
        Command::App(AppCommand::List(listing)) => Job::List(config, operator::Kind::App, listing.json),
        Command::Account(AccountCommand::Change(verb)) => Job::Change(config, operator::Kind::Account, verb),
        Command::App(AppCommand::Change(verb)) => Job::Change(config, operator::Kind::App, verb),
        Command::Device(_) | Command::Bench(_) | Command::Fuzz(_) | Command::Demo(_) => {
            unreachable!("returned above")
        }
    })
}

async fn run(job: Job) -> Result<(), BoxError> {
    match job {
        Job::Serve(config) => serve(config).await,
        Job::Migrate(config) => migrate(config).await,
        Job::AddAccount(config, email) => add_account(config, &email).await,
        Job::CreateApp { config, owner, name, redirect_uris, webhook_url, webhook_format } => {
            create_app(config, &owner, &name, &redirect_uris, &webhook_url, webhook_format).await
        }
        Job::AllowWebhookRange(config, args) => webhook_ranges::run(config, args).await,
        Job::Device(options) => Ok(simulator::run(options).await?),
        Job::List(..) | Job::Change(..) => unreachable!("run in main"),
        Job::Bench(options) => bench::run(options).await.map_err(|error| error.to_string().into()),
        Job::Fuzz(options) => fuzz::run(options).await,
        Job::Demo(options) => demo::run(options).await,
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

async fn serve(config: Config) -> Result<(), BoxError> {
    let app = crate::app::build(config).await?;
    let addr = app.local_addr();
    // Scripts and tests read this line to learn the port when listening on port 0.
    println!("presence listening on http://{addr}");
    tracing::info!(%addr, "listening");
    if let Some(admin) = app.admin_addr() {
        println!("presence admin on http://{admin}");
        tracing::info!(%admin, "admin listener (/metrics, /healthz, /livez)");
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    app.run(shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn migrate(config: Config) -> Result<(), BoxError> {
    let store =
        crate::store::open(&config.database_url(), &config, &crate::ops::cluster::new_node_id()).await?;
    store.close().await;
    println!("migrations applied to {}", crate::config::redact_url(&config.database_url()));
    Ok(())
}

async fn add_account(config: Config, email: &str) -> Result<(), BoxError> {
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']).to_owned();
    if accounts::check_new_password(&password).is_err() {
        return Err("the password (first line of standard input) must have at least 8 characters".into());
    }
    if accounts::normalize_email(email).is_none() {
        return Err("that is not an email address".into());
    }
    let listen = config.listen;
    let parts = crate::app::open(config, listen).await?;
    let hash = accounts::hash_password(&parts.core, password).await?;
    let created = accounts::sign_up(&parts.core, email, &hash).await;
    parts.core.store.close().await;
    created?;
    println!("account {} created", accounts::normalize_email(email).unwrap_or_default());
    Ok(())
}

async fn create_app(
    config: Config,
    owner: &str,
    name: &str,
    redirect_uris: &[String],
    webhook_url: &str,
    webhook_format: EventFormat,
) -> Result<(), BoxError> {
    let email = accounts::normalize_email(owner).ok_or("--owner is not an email address")?;
    let listen = config.listen;
    let parts = crate::app::open(config, listen).await?;
    let core = &parts.core;
    let created = async {
        let account = accounts::local_account(core, &email)
            .await?
            .ok_or_else(|| format!("no local account {email}; create it with presence account add"))?;
        Ok::<_, BoxError>(
            crate::ops::apps::register_app(core, account, name, redirect_uris, webhook_url, webhook_format)
                .await?,
        )
    }
    .await;
    core.store.close().await;
    let created = created?;
    println!("app_id          {}", created.app_id);
    println!("secret          {}", created.secret);
    println!("webhook_secret  {}", created.webhook_secret);
    println!("(the secrets are shown only now)");
    Ok(())
}

fn bench_options(args: &BenchArgs) -> Result<bench::Options, String> {
    let duration =
        humantime::parse_duration(&args.duration).map_err(|_| "--duration must be a duration like 10s")?;
    let tick = humantime::parse_duration(&args.tick)
        .ok()
        .filter(|tick| !tick.is_zero() && *tick <= std::time::Duration::from_secs(1))
        .ok_or("--tick must be a duration like 10ms, at most 1s")?;
    if args.devices == 0 || args.rate == 0 || args.runs == 0 || args.nodes == 0 {
        return Err("--devices, --rate, --runs and --nodes must be at least 1".into());
    }
    if args.nodes > 1 && args.database_url.is_none() {
        return Err("--nodes above 1 needs --database-url postgres://…".into());
    }
    Ok(bench::Options {
        devices: args.devices,
        rate: args.rate,
        duration,
        tick,
        runs: args.runs,
        drop: args.drop,
        ramp: !args.no_ramp,
        database_url: args.database_url.clone(),
        nodes: args.nodes,
    })
}

fn device_options(args: &DeviceArgs) -> Result<simulator::Options, String> {
    let schedule = args
        .schedule
        .as_deref()
        .map(simulator::parse_schedule)
        .transpose()
        .map_err(|sentence| format!("--schedule: {sentence}"))?
        .unwrap_or_default();
    let refresh = match humantime::parse_duration(&args.refresh) {
        Ok(refresh) if !refresh.is_zero() => refresh,
        _ => return Err("--refresh must be a duration like 10m".into()),
    };
    Ok(simulator::Options {
        server: args.server.clone(),
        email: args.email.clone(),
        password: args.password.clone(),
        name: args.name.clone(),
        prid_file: args.prid_file.clone(),
        schedule,
        refresh,
    })
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
