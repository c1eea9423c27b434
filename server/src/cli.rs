//! A daemon's command line: the flags every daemon has (`--config`, `--check-config`, logging,
//! TLS files), its own as a table of flags that each set one configuration key, and its
//! subcommands.

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{ConfigError, Overrides};
use crate::Daemon;

#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// TOML configuration file (default: /etc/damselfly/<daemon>.toml, when it exists). Any key
    /// can also be set as <PREFIX>__<SECTION>__<KEY> in the environment; flags win over both.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Log format: `text` or `json`.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// OTLP/HTTP collector for traces (e.g. http://otel-collector:4318).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// PEM certificate chain: served on TLS listeners; presented as the client certificate to
    /// edges (`tls.cert`).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert, readable by its owner only (`tls.key`).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates trusted for outbound calls besides the system's (`tls.ca_file`).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Validate the configuration, print it with every secret redacted, and exit (non-zero when
    /// invalid).
    #[arg(long)]
    pub check_config: bool,
}

/// A daemon's command line: the flags every daemon has, its own ([`FlagTable`]), and its
/// subcommands; [`parse`] names and describes it after its [`Daemon`].
#[derive(Debug, Parser)]
#[command(version)]
pub struct DaemonCli<F: FlagTable, S: Subcommand> {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub flags: Flags<F>,
    #[command(subcommand)]
    pub command: Option<S>,
}

impl<F: FlagTable, S: Subcommand> DaemonCli<F, S> {
    /// The daemon's flags given, as configuration keys.
    pub fn overrides(&self) -> Result<Overrides, ConfigError> {
        self.flags.overrides()
    }
}

/// Parses the command line, every flag (the common ones and the daemon's table) also read from
/// `<PREFIX>_<FLAG>` (clap needs the names before parsing; each daemon has its prefix).
///
/// A secret flag (one whose environment value clap hides) given on the command line itself is
/// refused: every user of the machine can read a process's arguments. Such values come from the
/// environment or, better, from the flag's `-file` twin.
pub fn parse<F: FlagTable, S: Subcommand>(daemon: &Daemon) -> DaemonCli<F, S> {
    let env = |suffix: &str| -> &'static str {
        Box::leak(format!("{}_{suffix}", daemon.env_prefix).into_boxed_str())
    };
    let named = || {
        let command = DaemonCli::<F, S>::command().name(daemon.name).about(daemon.about);
        F::FLAGS.iter().fold(command, |command, flag| {
            command.mut_arg(flag.long, |a| a.env(env(&flag.env_suffix())))
        })
    };
    let matches = named()
        .mut_arg("config", |a| a.env(env("CONFIG")))
        .mut_arg("log_format", |a| a.env(env("LOG_FORMAT")))
        .mut_arg("otlp_endpoint", |a| a.env(env("OTLP_ENDPOINT")))
        .mut_arg("tls_cert", |a| a.env(env("TLS_CERT")))
        .mut_arg("tls_key", |a| a.env(env("TLS_KEY")))
        .mut_arg("ca_file", |a| a.env(env("CA_FILE")))
        .get_matches();
    let mut command = named();
    let refused = command.get_arguments().find_map(|arg| {
        let id = arg.get_id().as_str();
        let on_command_line = matches!(matches.try_get_raw(id), Ok(Some(_)))
            && matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
        (arg.is_hide_env_values_set() && on_command_line).then(|| {
            let flag = arg.get_long().unwrap_or(id).to_string();
            let env = arg
                .get_env()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default();
            format!(
                "--{flag} on the command line would show the secret in the process list: \
                 use --{flag}-file FILE (readable by this user only) or {env}"
            )
        })
    });
    if let Some(message) = refused {
        command
            .error(clap::error::ErrorKind::ArgumentConflict, message)
            .exit();
    }
    DaemonCli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// What a command that talks to a running daemon's API needs: an HTTP client trusting the
/// system's CAs plus `ca` (a cluster CA), with bounded connect and total times, and the bearer
/// token read from `token_file` (mode 0600; `None` when no file is named).
pub fn api_client(
    ca: Option<&std::path::Path>,
    token_file: Option<&std::path::Path>,
    key: &str,
) -> Result<(reqwest::Client, Option<String>), String> {
    let mut token = None;
    crate::config::secret_from_file(&mut token, &token_file.map(PathBuf::from), key)
        .map_err(|e| e.to_string())?;
    let tls = crate::tls::TlsConfig {
        ca_file: ca.map(PathBuf::from),
        ..crate::tls::TlsConfig::default()
    };
    let client = crate::tls::client_builder(&tls, false)?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    Ok((client, token))
}

/// A daemon's flags that each set one configuration key, as a table ([`Flag`]): each flag is
/// written once, with the key it sets, instead of as a field and again as an override.
pub trait FlagTable: 'static {
    /// Each also read from `<PREFIX>_<ENV>`, the daemon's prefix added by [`parse`].
    const FLAGS: &'static [Flag];
}

/// A flag that sets one configuration key. A value is taken as text where the key's default is
/// text, else read as TOML (`8`, `true`), as the key's `<PREFIX>__<KEY>` variable would be.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// `--<long>`; also the variable `<PREFIX>_<LONG>` unless [`Flag::env`] names another.
    pub long: &'static str,
    /// The dotted key it sets (`cache.quota`); by default `long` with `_` for `-`.
    pub key: &'static str,
    pub env: &'static str,
    pub value_name: &'static str,
    pub help: &'static str,
    pub kind: FlagKind,
    /// Shown as the variable's value nowhere, and refused on the command line (see [`parse`]).
    pub secret: bool,
    /// Each value is `A=B`, set as a table with these two fields.
    pub pairs: Option<(&'static str, &'static str)>,
    /// The only values accepted, listed in `--help`.
    pub one_of: &'static [&'static str],
    /// Refuses a malformed value while parsing the command line, naming the flag (e.g.
    /// [`parses::<SocketAddr>`](parses)).
    pub check: Option<Check>,
}

/// How a flag's value is checked while parsing: `Err` says what is wrong with it.
pub type Check = fn(&str) -> Result<(), String>;

/// A [`Flag::checked`] check: the value parses as a `T`.
pub fn parses<T: std::str::FromStr>(value: &str) -> Result<(), String>
where
    T::Err: std::fmt::Display,
{
    value.parse::<T>().map(drop).map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    /// One value.
    Value,
    /// No value: sets the key to `true`.
    Switch,
    /// Repeatable, or comma-separated in the environment: replaces the list at the key.
    List,
    /// Repeatable: adds to the list at the key; an entry whose field of this name equals a new
    /// one's is replaced.
    Append(Option<&'static str>),
}

impl Flag {
    /// A flag `--<long> <VALUE_NAME>` setting the key `long`.
    pub const fn value(long: &'static str, value_name: &'static str, help: &'static str) -> Flag {
        Flag {
            long,
            key: "",
            env: "",
            value_name,
            help,
            kind: FlagKind::Value,
            secret: false,
            pairs: None,
            one_of: &[],
            check: None,
        }
    }

    /// A flag `--<long> <ADDR>` setting the key `long` to a socket address (`127.0.0.1:5080`).
    pub const fn address(long: &'static str, help: &'static str) -> Flag {
        Flag::value(long, "ADDR", help).checked(parses::<std::net::SocketAddr>)
    }

    /// A flag `--<long>` without a value, setting the key `long` to `true`.
    pub const fn switch(long: &'static str, help: &'static str) -> Flag {
        Flag {
            kind: FlagKind::Switch,
            ..Flag::value(long, "", help)
        }
    }

    pub const fn key(self, key: &'static str) -> Flag {
        Flag { key, ..self }
    }

    pub const fn env(self, env: &'static str) -> Flag {
        Flag { env, ..self }
    }

    pub const fn list(self) -> Flag {
        Flag {
            kind: FlagKind::List,
            ..self
        }
    }

    pub const fn appends(self, unique_by: Option<&'static str>) -> Flag {
        Flag {
            kind: FlagKind::Append(unique_by),
            ..self
        }
    }

    pub const fn secret(self) -> Flag {
        Flag { secret: true, ..self }
    }

    pub const fn pairs(self, first: &'static str, second: &'static str) -> Flag {
        Flag {
            pairs: Some((first, second)),
            ..self
        }
    }

    pub const fn one_of(self, values: &'static [&'static str]) -> Flag {
        Flag {
            one_of: values,
            ..self
        }
    }

    pub const fn checked(self, check: Check) -> Flag {
        Flag {
            check: Some(check),
            ..self
        }
    }

    /// The variable's name after the daemon's prefix and `_`.
    fn env_suffix(&self) -> String {
        let upper = if self.env.is_empty() { self.long } else { self.env };
        upper.to_ascii_uppercase().replace('-', "_")
    }

    fn arg(&self) -> clap::Arg {
        let arg = clap::Arg::new(self.long)
            .long(self.long)
            .help(self.help)
            .hide_env_values(self.secret);
        let arg = match self.kind {
            FlagKind::Switch => return arg.action(clap::ArgAction::SetTrue),
            FlagKind::Value => arg.action(clap::ArgAction::Set),
            FlagKind::List | FlagKind::Append(_) => arg.action(clap::ArgAction::Append).value_delimiter(','),
        };
        let arg = arg.value_name(self.value_name);
        match (self.one_of, self.check) {
            ([], None) => arg,
            ([], Some(check)) => {
                arg.value_parser(move |value: &str| check(value).map(|()| value.to_string()))
            }
            (values, _) => arg.value_parser(clap::builder::PossibleValuesParser::new(values)),
        }
    }

    /// What a given value sets: text, or a table of the two [`Flag::pairs`] fields.
    fn value_of(&self, raw: &str) -> Result<toml::Value, ConfigError> {
        let Some((first, second)) = self.pairs else {
            return Ok(toml::Value::String(raw.to_string()));
        };
        match raw.split_once('=') {
            Some((a, b)) if !a.trim().is_empty() && !b.trim().is_empty() => {
                let mut table = toml::Table::new();
                table.insert(first.into(), a.trim().into());
                table.insert(second.into(), b.trim().into());
                Ok(toml::Value::Table(table))
            }
            _ => Err(ConfigError::Invalid(format!(
                "--{} wants {}, got {raw:?}",
                self.long, self.value_name
            ))),
        }
    }
}

/// The flags of a [`FlagTable`] given on the command line or in the environment; flattened into
/// a daemon's `Cli`.
#[derive(Clone)]
pub struct Flags<T> {
    given: Vec<(&'static Flag, Vec<String>)>,
    table: std::marker::PhantomData<T>,
}

/// The flags given, a secret one's values shown as [`crate::config::REDACTED`].
impl<T> std::fmt::Debug for Flags<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = self.given.iter().map(|(flag, values)| {
            let values: Vec<&str> = if flag.secret {
                vec![crate::config::REDACTED; values.len()]
            } else {
                values.iter().map(String::as_str).collect()
            };
            (flag.long, values)
        });
        f.debug_map().entries(shown).finish()
    }
}

impl<T: FlagTable> Flags<T> {
    /// The flags given, as configuration keys.
    pub fn overrides(&self) -> Result<Overrides, ConfigError> {
        let mut o = Overrides::default();
        for (flag, values) in &self.given {
            let key = if flag.key.is_empty() {
                flag.long.replace('-', "_")
            } else {
                flag.key.to_string()
            };
            let key = key.as_str();
            match flag.kind {
                FlagKind::Switch => o.set(key, Some(&true)),
                FlagKind::Value if flag.pairs.is_none() => o.set_text(key, &values[0]),
                FlagKind::Value => o.set(key, Some(&flag.value_of(&values[0])?)),
                FlagKind::List | FlagKind::Append(_) => {
                    let list: Vec<toml::Value> = values
                        .iter()
                        .map(|v| flag.value_of(v))
                        .collect::<Result<_, _>>()?;
                    match flag.kind {
                        FlagKind::Append(unique_by) => o.append(key, &list, unique_by),
                        _ => o.set_list(key, &list),
                    }
                }
            };
        }
        Ok(o)
    }
}

impl<T: FlagTable> clap::FromArgMatches for Flags<T> {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let given = T::FLAGS
            .iter()
            .filter_map(|flag| {
                let values: Vec<String> = match flag.kind {
                    FlagKind::Switch => matches.get_flag(flag.long).then(|| vec!["true".into()])?,
                    _ => matches.get_many::<String>(flag.long)?.cloned().collect(),
                };
                Some((flag, values))
            })
            .collect();
        Ok(Flags {
            given,
            table: std::marker::PhantomData,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl<T: FlagTable> clap::Args for Flags<T> {
    fn augment_args(command: clap::Command) -> clap::Command {
        command.args(T::FLAGS.iter().map(Flag::arg))
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Table;

    impl FlagTable for Table {
        const FLAGS: &'static [Flag] = &[
            Flag::address("listen", "Where"),
            Flag::value("token", "TOKEN", "A secret").secret(),
            Flag::value("edge", "REGION=URL", "Edges")
                .list()
                .pairs("region", "url")
                .key("edges"),
            Flag::switch("insecure", "Lab"),
        ];
    }

    fn flags(args: &[&str]) -> Result<Flags<Table>, clap::Error> {
        let command = <Flags<Table> as Args>::augment_args(clap::Command::new("t"));
        let matches = command.try_get_matches_from(std::iter::once("t").chain(args.iter().copied()))?;
        Flags::from_arg_matches(&matches)
    }

    #[test]
    fn a_secret_flag_is_never_shown_and_typed_flags_are_checked() {
        let given = flags(&["--token", "s3cret-value", "--listen", "127.0.0.1:1"]).unwrap();
        let shown = format!("{given:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("127.0.0.1:1"),
            "{shown}"
        );
        let err = flags(&["--listen", "nowhere"]).unwrap_err().to_string();
        assert!(err.contains("--listen"), "{err}");
    }

    #[test]
    fn flags_become_their_keys() {
        let given = flags(&["--edge", "eu=http://a", "--edge", "us=http://b", "--insecure"]).unwrap();
        let overrides = given.overrides().unwrap();
        let keys: Vec<&str> = overrides.keys().collect();
        assert_eq!(keys, ["edges", "insecure"]);
        let bad = flags(&["--edge", "eu"])
            .unwrap()
            .overrides()
            .unwrap_err()
            .to_string();
        assert!(bad.contains("--edge wants REGION=URL"), "{bad}");
    }
}
