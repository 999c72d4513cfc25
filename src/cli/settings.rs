//! Settings on the command line: `--config FILE`, `--log-json`, and every key of
//! `presence.sample.toml` as a flag.

use std::path::PathBuf;

use clap::Args;

use crate::config::Config;

/// `--config FILE`, `--log-json`, and every key of `presence.sample.toml` as a flag
/// (`max_channels_per_uaid` is `--max-channels-per-uaid`). Unset flags leave lower layers alone.
#[derive(Clone)]
pub struct Settings {
    config: Option<PathBuf>,
    flags: Vec<(&'static str, String)>,
}

/// The configuration keys with their flags, in the sample's order; made once and kept for
/// the life of the process, so clap can borrow them.
fn setting_keys() -> &'static [(&'static str, &'static str)] {
    static KEYS: std::sync::OnceLock<Vec<(&'static str, &'static str)>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        crate::config::DEFAULTS
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
    pub fn load(&self) -> Result<Config, String> {
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
