//! Layered configuration, the same for every daemon: built-in defaults, then the TOML file,
//! then environment variables, then flags.
//!
//! - The file is `--config FILE`, or `/etc/damselfly/<daemon>.toml` when that exists.
//! - Any key can be set from the environment as `<PREFIX>__<SECTION>__<KEY>` (upper case,
//!   sections separated by double underscores, array elements by their index):
//!   `DAMSELFLY_EDGE__CACHE__QUOTA=200GiB`, `DAMSELFLY_EDGE__LIMITS__PIECE_SENDS=8`,
//!   `DAMSELFLY_EDGE__UPSTREAMS__0__URL=https://…`. Values are read as TOML (`8`, `true`,
//!   `["a", "b"]`) and otherwise taken as text; a key whose default is text is always text.
//! - Flags (and the environment variables clap reads for them) come last.
//!
//! Unknown keys fail loudly wherever they come from: every daemon's config struct denies them.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;
use toml::{Table, Value};

use crate::Daemon;

/// What `--check-config` prints instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// A secret as `--check-config` shows it: `None` stays `None`, a value becomes [`REDACTED`].
pub fn redact(secret: &Option<String>) -> Option<String> {
    secret.as_ref().map(|_| REDACTED.to_string())
}

/// Fills `value` from `file` when one is named: secrets kept in files (mode 0600 or stricter,
/// one value, a final newline ignored) stay out of config files, environments and process
/// lists. Naming both is an error.
pub fn secret_from_file(
    value: &mut Option<String>,
    file: &Option<PathBuf>,
    key: &str,
) -> Result<(), ConfigError> {
    let Some(path) = file else { return Ok(()) };
    if value.is_some() {
        return Err(ConfigError::Invalid(format!("set {key} or {key}_file, not both")));
    }
    crate::tls::check_private(path).map_err(|e| ConfigError::Invalid(format!("{key}_file: {e}")))?;
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let secret = text.strip_suffix('\n').unwrap_or(&text).trim_end_matches('\r');
    if secret.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "{key}_file {} is empty",
            path.display()
        )));
    }
    *value = Some(secret.to_string());
    Ok(())
}

/// A URL with its password (if any) replaced, for URLs such as `redis://:pw@host/0`.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some(REDACTED));
            u.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) => REDACTED.to_string(),
    }
}

/// The schemes of URLs a daemon calls over HTTP.
pub const HTTP_SCHEMES: &[&str] = &["http", "https"];

/// Refuses `url` unless it is a URL with one of `schemes`.
pub fn check_url(url: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if schemes.contains(&u.scheme()) => Ok(()),
        _ => Err(ConfigError::Invalid(format!(
            "{url:?} is not a URL with scheme {}",
            schemes.join("/")
        ))),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The `[server]` section of every daemon: how its listeners are bounded and drained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// On SIGTERM: how long in-flight requests may finish before the remaining connections
    /// are closed.
    #[default(20)]
    pub shutdown_grace_secs: u64,
    /// A connection must deliver a complete request head within this time of the server
    /// being ready for one. This bounds slow or partial headers and idle kept-alive
    /// connections alike.
    #[default(30)]
    pub header_read_timeout_secs: u64,
    /// Time to produce a response's headers; a request still waiting gets `503`. Bodies
    /// stream for as long as they make progress.
    #[default(120)]
    pub request_timeout_secs: u64,
    /// Requests handled at once by one listener, across all its routes; more wait (within
    /// `request_timeout_secs`).
    #[default(1024)]
    pub max_concurrent_requests: usize,
    /// Connections open at once on one listener. Beyond it a new connection is answered `503`
    /// with `Retry-After` and closed. Lowered at start to what the open-files limit allows.
    #[default(10_000)]
    pub max_connections: usize,
    /// A client that takes less than this many bytes per second while the server is blocked
    /// sending to it, for longer than `send_stall_secs`, loses its connection. Time the server
    /// has nothing to send never counts.
    // A reader under 16 KiB/s for 30 s has stopped reading (or wants to hold the
    // connection): far below any link a pull runs on.
    #[default(16 * 1024)]
    pub send_min_bytes_per_sec: u64,
    #[default(30)]
    pub send_stall_secs: u64,
}

impl ServerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("server.header_read_timeout_secs", self.header_read_timeout_secs),
            ("server.request_timeout_secs", self.request_timeout_secs),
            (
                "server.max_concurrent_requests",
                self.max_concurrent_requests as u64,
            ),
            ("server.max_connections", self.max_connections as u64),
            ("server.send_stall_secs", self.send_stall_secs),
        ];
        match positive.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(ConfigError::Invalid(format!("{name} must be > 0"))),
            None => Ok(()),
        }
    }
}

/// The `[log]` section of every daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`, on stderr. The level comes from `DAMSELFLY_LOG`, else `RUST_LOG`.
    #[default("text".into())]
    pub format: String,
    /// OTLP/HTTP collector for traces (`http://collector:4318`; `/v1/traces` is appended when
    /// the URL has no path). Unset: the standard `OTEL_EXPORTER_OTLP_*` variables, else no export.
    pub otlp_endpoint: Option<String>,
}

impl LogConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid(format!(
                "log.format must be text or json, not {:?}",
                self.format
            )));
        }
        match self.otlp_endpoint.as_deref().map(reqwest::Url::parse) {
            Some(Ok(u)) if !matches!(u.scheme(), "http" | "https") => Err(ConfigError::Invalid(format!(
                "log.otlp_endpoint {u} is not an http(s) URL"
            ))),
            Some(Err(e)) => Err(ConfigError::Invalid(format!("log.otlp_endpoint: {e}"))),
            _ => Ok(()),
        }
    }
}

/// Values given as flags, by their dotted key (`cache.quota`), applied over file and environment.
#[derive(Debug, Default)]
pub struct Overrides(Vec<(String, Value, Apply)>);

#[derive(Debug, Clone, Copy)]
enum Apply {
    Replace,
    /// Text, read as TOML unless the key's value is text (as an environment value is).
    Text,
    /// Appended to the list already there; an entry whose field `.0` equals a new entry's is
    /// dropped first (a flag naming the same registry replaces the file's entry).
    Append(Option<&'static str>),
}

impl Overrides {
    /// The keys set, in order.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(key, _, _)| key.as_str())
    }

    /// Sets `key` when the flag was given.
    pub fn set<T: Serialize>(&mut self, key: &str, value: Option<&T>) -> &mut Self {
        if let Some(v) = value.and_then(|v| Value::try_from(v).ok()) {
            self.0.push((key.to_string(), v, Apply::Replace));
        }
        self
    }

    /// Sets `key` to `raw`, read as its environment variable would be (see the module's notes).
    pub fn set_text(&mut self, key: &str, raw: &str) -> &mut Self {
        self.0
            .push((key.to_string(), Value::String(raw.to_string()), Apply::Text));
        self
    }

    /// Sets `key` to a list when the flag was given at least once.
    pub fn set_list<T: Serialize>(&mut self, key: &str, values: &[T]) -> &mut Self {
        if !values.is_empty() {
            self.set(key, Some(&values));
        }
        self
    }

    /// Adds `values` to the list at `key`; with `unique_by`, entries already there whose field
    /// of that name equals a new entry's are replaced.
    pub fn append<T: Serialize>(
        &mut self,
        key: &str,
        values: &[T],
        unique_by: Option<&'static str>,
    ) -> &mut Self {
        if let (false, Ok(v)) = (values.is_empty(), Value::try_from(values)) {
            self.0.push((key.to_string(), v, Apply::Append(unique_by)));
        }
        self
    }
}

fn appended(existing: Option<&Value>, new: Value, unique_by: Option<&str>) -> Value {
    let (Some(Value::Array(old)), Value::Array(new)) = (existing, &new) else {
        return new;
    };
    let field = |v: &Value| unique_by.and_then(|f| v.get(f)).cloned();
    let mut list: Vec<Value> = old
        .iter()
        .filter(|o| field(o).is_none() || !new.iter().any(|n| field(n) == field(o)))
        .cloned()
        .collect();
    list.extend(new.iter().cloned());
    Value::Array(list)
}

/// The default config file of a daemon, read when no `--config` is given and it exists.
pub fn default_file(daemon: &Daemon) -> PathBuf {
    PathBuf::from(format!("/etc/damselfly/{}.toml", daemon.name))
}

/// Builds the configuration: `C::default()`, the file, the environment, then `flags`.
pub fn load<C>(daemon: &Daemon, file: Option<&Path>, flags: Overrides) -> Result<C, ConfigError>
where
    C: Serialize + DeserializeOwned + Default,
{
    let env = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    load_from(daemon, file, env, flags)
}

fn load_from<C>(
    daemon: &Daemon,
    file: Option<&Path>,
    env: impl Iterator<Item = (String, String)>,
    flags: Overrides,
) -> Result<C, ConfigError>
where
    C: Serialize + DeserializeOwned + Default,
{
    let mut merged = match Value::try_from(C::default()) {
        Ok(Value::Table(t)) => t,
        _ => return Err(ConfigError::Invalid("the defaults are not a table".into())),
    };
    let default_path = default_file(daemon);
    let file = file.or_else(|| default_path.exists().then_some(default_path.as_path()));
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let parse = |source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        };
        // Parsed as the config itself first: its errors name the line of an unknown key.
        toml::from_str::<C>(&text).map_err(parse)?;
        merge(&mut merged, toml::from_str::<Table>(&text).map_err(parse)?);
    }
    let prefix = format!("{}__", daemon.env_prefix);
    let mut env: Vec<(String, String)> = env.filter(|(k, _)| k.starts_with(&prefix)).collect();
    env.sort();
    for (var, raw) in env {
        let key: Vec<String> = var[prefix.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        set(&mut merged, &key, |existing| env_value(&raw, existing)).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?;
    }
    for (key, value, apply) in flags.0 {
        let path: Vec<String> = key.split('.').map(str::to_string).collect();
        set(&mut merged, &path, |existing| match (apply, value) {
            (Apply::Text, Value::String(raw)) => env_value(&raw, existing),
            (Apply::Replace | Apply::Text, value) => value,
            (Apply::Append(unique_by), value) => appended(existing, value, unique_by),
        })
        .map_err(ConfigError::Invalid)?;
    }
    Value::Table(merged)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))
}

/// Tables merge key by key; anything else (values, lists, lists of tables) is replaced.
fn merge(into: &mut Table, from: Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Table(existing)), Value::Table(new)) => merge(existing, new),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// Sets the value at `path` (table keys, or indexes into lists; the index one past the end
/// appends), creating tables on the way. `value` sees what was there.
fn set(root: &mut Table, path: &[String], value: impl FnOnce(Option<&Value>) -> Value) -> Result<(), String> {
    let (first, rest) = path.split_first().ok_or("empty key")?;
    if path.iter().any(String::is_empty) {
        return Err("empty key segment".into());
    }
    let mut slot = root
        .entry(first.clone())
        .or_insert_with(|| Value::Table(Table::new()));
    for segment in rest {
        slot = child(slot, segment)?;
    }
    let new = value(Some(&*slot).filter(|v| !is_empty_table(v)));
    *slot = new;
    Ok(())
}

fn is_empty_table(v: &Value) -> bool {
    matches!(v, Value::Table(t) if t.is_empty())
}

fn child<'a>(parent: &'a mut Value, segment: &str) -> Result<&'a mut Value, String> {
    match parent {
        Value::Table(t) => Ok(t
            .entry(segment.to_string())
            .or_insert_with(|| Value::Table(Table::new()))),
        Value::Array(items) => {
            let index: usize = segment
                .parse()
                .map_err(|_| format!("{segment:?} is not an index into a list"))?;
            if index == items.len() {
                items.push(Value::Table(Table::new()));
            }
            let len = items.len();
            items
                .get_mut(index)
                .ok_or_else(|| format!("index {index} is past the list's end ({len} entries)"))
        }
        _ => Err(format!("{segment:?} is below a value that is not a section")),
    }
}

/// An environment value as TOML when it reads as TOML, else as text; always text where the
/// default is text (so `REGION=123` stays the region "123").
fn env_value(raw: &str, existing: Option<&Value>) -> Value {
    if matches!(existing, Some(Value::String(_))) {
        return Value::String(raw.to_string());
    }
    toml::from_str::<Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

/// `--check-config`: prints the effective configuration (already redacted) and whether it is
/// valid.
pub fn print_checked<C: Serialize>(daemon: &Daemon, config: &C) -> std::process::ExitCode {
    match toml::to_string_pretty(config) {
        Ok(text) => println!("{text}"),
        Err(e) => {
            eprintln!("{}: cannot print the configuration: {e}", daemon.name);
            return std::process::ExitCode::FAILURE;
        }
    }
    eprintln!("{}: configuration is valid", daemon.name);
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        region: String,
        upstream: Option<String>,
        port: u16,
        lists: Vec<Item>,
        server: ServerConfig,
    }

    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Item {
        url: String,
        #[serde(default)]
        user: Option<String>,
    }

    impl Default for Sample {
        fn default() -> Self {
            Sample {
                region: "default".into(),
                upstream: None,
                port: 1,
                lists: vec![],
                server: ServerConfig {
                    shutdown_grace_secs: 7,
                    ..ServerConfig::default()
                },
            }
        }
    }

    const DAEMON: Daemon = Daemon {
        name: "sample-daemon-that-has-no-default-file",
        about: "A sample daemon",
        env_prefix: "SAMPLE",
    };

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// `contents` written to a file `name` in a fresh directory (gone when the guard drops).
    fn temp_file(name: &str, contents: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        (dir, path)
    }

    /// Loads a [`Sample`] from a config file holding `toml` (none without it), the environment
    /// `pairs` and `flags`.
    fn load(toml: Option<&str>, pairs: &[(&str, &str)], flags: Overrides) -> Result<Sample, ConfigError> {
        let file = toml.map(|text| temp_file("s.toml", text));
        let path = file.as_ref().map(|(_dir, path)| path.as_path());
        load_from(&DAEMON, path, env(pairs), flags)
    }

    /// Why loading a [`Sample`] from `toml` and the environment `pairs` (no flags) fails.
    fn load_error(toml: Option<&str>, pairs: &[(&str, &str)]) -> String {
        load(toml, pairs, Overrides::default()).unwrap_err().to_string()
    }

    #[test]
    fn layers_apply_in_order_and_keep_the_daemons_defaults() {
        let mut flags = Overrides::default();
        flags.set("port", Some(&4u16));
        let c = load(
            Some("region = \"file\"\nport = 2\n[server]\nrequest_timeout_secs = 5\n"),
            &[
                ("SAMPLE__PORT", "3"),
                ("SAMPLE__REGION", "123"),
                ("SAMPLE__SERVER__MAX_CONNECTIONS", "9"),
                ("SAMPLE__LISTS__0__URL", "http://a"),
                ("SAMPLE__UPSTREAM", "http://u:1"),
                ("OTHER__PORT", "5"),
            ],
            flags,
        )
        .unwrap();
        assert_eq!(c.port, 4, "flags win");
        assert_eq!(c.region, "123", "environment over file; text stays text");
        assert_eq!(c.upstream.as_deref(), Some("http://u:1"));
        assert_eq!(c.server.request_timeout_secs, 5);
        assert_eq!(c.server.max_connections, 9);
        assert_eq!(
            c.server.shutdown_grace_secs, 7,
            "the daemon's default, not the section's"
        );
        assert_eq!(
            c.lists,
            vec![Item {
                url: "http://a".into(),
                user: None
            }]
        );
    }

    #[test]
    fn flags_can_add_to_a_list_replacing_entries_of_the_same_name() {
        let mut flags = Overrides::default();
        flags.append(
            "lists",
            &[Item {
                url: "a".into(),
                user: Some("flag".into()),
            }],
            Some("url"),
        );
        let c = load(
            Some("[[lists]]\nurl = \"a\"\nuser = \"file\"\n[[lists]]\nurl = \"b\"\n"),
            &[],
            flags,
        )
        .unwrap();
        let urls: Vec<(&str, Option<&str>)> = c
            .lists
            .iter()
            .map(|i| (i.url.as_str(), i.user.as_deref()))
            .collect();
        assert_eq!(urls, [("b", None), ("a", Some("flag"))]);
    }

    #[test]
    fn unknown_keys_fail_loudly_from_file_and_environment() {
        let err = load_error(Some("regoin = \"x\"\n"), &[]);
        assert!(err.contains("regoin") && err.contains("line 1"), "{err}");
        let err = load_error(None, &[("SAMPLE__SERVER__MAX_CONNECTINOS", "1")]);
        assert!(err.contains("max_connectinos"), "{err}");
        let err = load_error(None, &[("SAMPLE__PORT__X", "1")]);
        assert!(err.contains("SAMPLE__PORT__X"), "{err}");
    }

    #[test]
    fn secrets_come_from_private_files_only() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, path) = temp_file("token", "s3cret-from-file\n");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut value = None;
        secret_from_file(&mut value, &Some(path.clone()), "warm_token").unwrap();
        assert_eq!(value.as_deref(), Some("s3cret-from-file"));
        let err = secret_from_file(&mut value, &Some(path.clone()), "warm_token").unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = secret_from_file(&mut None, &Some(path), "warm_token")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("readable by others") && !err.contains("s3cret"),
            "{err}"
        );
    }

    #[test]
    fn urls_lose_only_their_password() {
        assert_eq!(
            redact_url("redis://:pw@r:6379/0"),
            "redis://:%3Credacted%3E@r:6379/0"
        );
        assert_eq!(redact_url("redis://r:6379"), "redis://r:6379");
        assert_eq!(redact_url("not a url with pw"), REDACTED);
        assert_eq!(redact(&Some("t".into())).as_deref(), Some(REDACTED));
    }

    #[test]
    fn lists_of_tables_are_replaced_not_merged() {
        let mut base: Table =
            toml::from_str("[[l]]\nurl = \"a\"\n[[l]]\nurl = \"b\"\n[t]\nx = 1\ny = 2\n").unwrap();
        merge(
            &mut base,
            toml::from_str("[[l]]\nurl = \"c\"\n[t]\ny = 3\n").unwrap(),
        );
        assert_eq!(
            base,
            toml::from_str::<Table>("[[l]]\nurl = \"c\"\n[t]\nx = 1\ny = 3\n").unwrap()
        );
    }
}
