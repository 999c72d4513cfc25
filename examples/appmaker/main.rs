//! appmaker, the seed's example app: a small web site that asks its visitors for their Presence,
//! shows who can be reached right now (live), and sends them notifications. It talks to Presence
//! only over HTTP, like any third-party app; read `presence_client.rs` for the integration and
//! `site.rs` for the pages.
//!
//! Register it first (its redirect URI is `<public url>/callback`):
//!
//! ```sh
//! presence app create --owner you@example.com --name appmaker --redirect-uri http://127.0.0.1:8081/callback \
//!     --webhook-url http://127.0.0.1:8081/webhook --webhook-format v1
//! cargo run --example appmaker -- --presence http://127.0.0.1:8080 --app-id app_… --secret ps_… \
//!     --webhook-secret whsec_…
//! ```
//!
//! (A webhook to loopback needs `webhook_allow = "127.0.0.1"` on the Presence node; without a
//! webhook, leave out both webhook flags and the stream alone feeds the live page.)
//!
//! `presence demo` runs the same code against a Presence of its own, with simulated users.

mod presence_client;
mod site;

use clap::Parser;

#[derive(Parser)]
#[command(name = "appmaker", about = "An example app that uses Presence")]
struct Args {
    /// The Presence service.
    #[arg(long, env = "APPMAKER_PRESENCE", default_value = "http://127.0.0.1:8080")]
    presence: String,
    /// The app's id, from `presence app create` or /developers.
    #[arg(long, env = "APPMAKER_APP_ID")]
    app_id: String,
    /// The app's secret (ps_…). Prefer the environment variable to the flag.
    #[arg(long, env = "APPMAKER_SECRET", hide_env_values = true)]
    secret: String,
    /// The app's webhook signing secret (whsec_…), to check Presence's webhooks at /webhook.
    #[arg(long, env = "APPMAKER_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Where the site listens.
    #[arg(long, env = "APPMAKER_LISTEN", default_value = "127.0.0.1:8081")]
    listen: std::net::SocketAddr,
    /// Where browsers reach the site (default: http://<listen>).
    #[arg(long, env = "APPMAKER_PUBLIC_URL")]
    public_url: Option<String>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let public_url = args.public_url.unwrap_or_else(|| format!("http://{addr}"));
    println!("appmaker on {public_url}");
    let settings = site::Settings {
        presence: presence_client::Presence::new(&args.presence, &args.app_id, &args.secret),
        public_url,
        welcome: None,
        default_name: String::new(),
        webhook_secret: args.webhook_secret,
    };
    site::serve(listener, settings, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
