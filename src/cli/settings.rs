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

/// A setting as the sample documents it: its key, its flag, and its meaning (the comment line
/// right above the key), which is the flag's help.
#[derive(Debug)]
struct Key {
    key: &'static str,
    flag: &'static str,
    help: &'static str,
}

/// The configuration keys with their flags and meanings, in the sample's order.
fn keys_of(sample: &'static str) -> Vec<Key> {
    let mut keys = Vec::new();
    let mut comment: Option<&'static str> = None;
    for line in sample.lines() {
        let line = line.trim();
        if let Some(text) = line.strip_prefix('#') {
            comment = Some(text.trim());
            continue;
        }
        if let Some((key, _)) = line.split_once('=') {
            let key = key.trim();
            let flag: &'static str = Box::leak(key.replace('_', "-").into_boxed_str());
            keys.push(Key { key, flag, help: comment.unwrap_or("") });
        }
        comment = None;
    }
    keys
}

/// The keys of the embedded sample, made once and kept for the life of the process, so clap
/// can borrow them.
fn setting_keys() -> &'static [Key] {
    static KEYS: std::sync::OnceLock<Vec<Key>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| keys_of(crate::config::DEFAULTS))
}

impl clap::FromArgMatches for Settings {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut flags: Vec<(&'static str, String)> = setting_keys()
            .iter()
            .filter_map(|setting| Some((setting.key, matches.get_one::<String>(setting.key)?.clone())))
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
        setting_keys().iter().fold(command, |command, setting| {
            command.arg(clap::Arg::new(setting.key).long(setting.flag).value_name("VALUE").help(setting.help))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_has_the_meaning_the_readme_gives_its_setting() {
        let readme = include_str!("../../README.md");
        let keys = setting_keys();
        assert!(keys.len() > 40, "{keys:?}");
        for setting in keys {
            assert!(!setting.help.is_empty(), "{} has no comment above it in the sample", setting.key);
            let row = readme
                .lines()
                .find(|line| line.starts_with(&format!("| `{}` |", setting.key)))
                .unwrap_or_else(|| panic!("{} is not in the README's configuration table", setting.key));
            let meaning = row.trim_end_matches('|').rsplit(" | ").next().unwrap_or_default().trim();
            assert_eq!(meaning, setting.help, "{}: README and sample disagree", setting.key);
        }
    }

    #[test]
    fn the_help_is_the_comment_line_right_above_the_key() {
        let keys =
            keys_of("# A section.\n\n# the first\na = 1\nb = 2\n# ignored\n\n# the third\nc = \"x\"\n");
        let helps: Vec<(&str, &str)> = keys.iter().map(|k| (k.key, k.help)).collect();
        assert_eq!(helps, [("a", "the first"), ("b", ""), ("c", "the third")]);
    }
}
