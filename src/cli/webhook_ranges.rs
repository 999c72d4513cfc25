//! `presence app allow-webhook-range`: the operator lets one app's webhooks reach non-public
//! ranges (a receiver on the operator's own network) that `webhook_allow` does not open to every
//! app. Only the operator can: no API or page sets them.

use clap::Args;

use super::settings::Settings;
use super::BoxError;
use crate::config::Config;
use crate::egress::{format_allow_list, Cidr};
use crate::ops::apps::{allow_webhook_ranges, RangeChange};

#[derive(Args)]
pub struct AllowWebhookRange {
    /// The app (`app_…`).
    #[arg(long)]
    app: String,
    /// A range its webhook may reach, e.g. 10.0.0.0/8 or ::1; repeat for several. Without
    /// --range or --clear, the app's ranges are shown.
    #[arg(long = "range", value_parser = parse_range, conflicts_with = "clear")]
    ranges: Vec<Cidr>,
    /// Remove every range of the app's own (`webhook_allow` still applies).
    #[arg(long)]
    clear: bool,
    #[command(flatten)]
    pub settings: Settings,
}

fn parse_range(text: &str) -> Result<Cidr, String> {
    text.parse()
}

/// Changes (or shows) the app's ranges and prints them.
pub async fn run(config: Config, args: AllowWebhookRange) -> Result<(), BoxError> {
    let change = match (args.clear, args.ranges.is_empty()) {
        (true, _) => RangeChange::Clear,
        (false, true) => RangeChange::Show,
        (false, false) => RangeChange::Add(args.ranges),
    };
    let everyone = config.webhook_allow.clone();
    let listen = config.listen;
    let parts = crate::app::open(config, listen).await?;
    let result = allow_webhook_ranges(&parts.core, &args.app, change).await;
    parts.core.store.close().await;
    let ranges = result.map_err(|error| match error {
        crate::ops::Error::NotFound(_) => format!("no app {}", args.app).into(),
        other => BoxError::from(other),
    })?;
    let shown = if ranges.is_empty() { "(none)".to_owned() } else { format_allow_list(&ranges) };
    println!("{}  webhook ranges: {shown}", args.app);
    if !everyone.trim().is_empty() {
        println!("(and for every app, webhook_allow: {})", everyone.trim());
    }
    Ok(())
}
