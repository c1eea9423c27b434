//! The `harbor-integration` command line.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::harbor::{HarborClient, HarborError};
use crate::register::{PolicySpec, ProviderSpec, Registration, WebhookSpec};
use crate::Scope;

/// Connects Harbor to Damselfly: registers the preheater as a Harbor project's webhook target
/// and as Harbor's P2P preheat provider (vendor "Dragonfly").
#[derive(Debug, Parser)]
#[command(name = "harbor-integration", version, about, long_about = None, args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update, in Harbor, the project's webhook policy, the P2P provider instance and
    /// the project's preheat policy. Safe to run again: what is already right is left alone.
    Register(RegisterArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Harbor sends nothing: the preheater must have no provider credentials configured.
    None,
    /// Harbor sends `Authorization: Bearer <token>` (the preheater's `harbor.provider_tokens`).
    Oauth,
    /// Harbor sends Basic `user:password` (the preheater's `harbor.provider_basic`).
    Basic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Trigger {
    /// On every push (and scan completion or label) matching the filters.
    EventBased,
    /// Only when run from Harbor's UI or API.
    Manual,
    /// On the `--cron` schedule.
    Scheduled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PayloadFormat {
    /// Harbor ≥ 2.8.
    #[value(name = "CloudEvents")]
    CloudEvents,
    /// Every Harbor version.
    #[value(name = "Default")]
    Default,
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// Harbor's address, e.g. https://harbor.example.com.
    #[arg(long, env = "HARBOR_URL", value_name = "URL")]
    pub harbor: String,
    /// Harbor user (a system administrator, or a robot allowed to manage the project and
    /// P2P instances).
    #[arg(long, env = "HARBOR_USERNAME", value_name = "USER")]
    pub username: Option<String>,
    #[arg(
        long,
        env = "HARBOR_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// Accept an invalid TLS certificate from Harbor's API.
    #[arg(long)]
    pub harbor_insecure: bool,
    /// The Harbor project (name) whose pushes the preheater warms.
    #[arg(long, value_name = "PROJECT")]
    pub project: String,
    /// The preheater as Harbor reaches it, e.g. http://preheater.internal:5070.
    #[arg(long, env = "DAMSELFLY_PREHEATER_URL", value_name = "URL")]
    pub preheater: String,

    /// Name of the project webhook policy.
    #[arg(long, default_value = "damselfly-preheater", value_name = "NAME")]
    pub webhook_name: String,
    /// Exact Authorization value Harbor sends with webhooks (the preheater's `harbor_auth`).
    #[arg(
        long,
        env = "DAMSELFLY_HARBOR_WEBHOOK_AUTH",
        value_name = "VALUE",
        hide_env_values = true
    )]
    pub webhook_auth: Option<String>,
    /// Webhook event types (comma-separated or repeated).
    #[arg(
        long = "event-type",
        value_delimiter = ',',
        default_value = "PUSH_ARTIFACT",
        value_name = "TYPE"
    )]
    pub event_types: Vec<String>,
    /// Webhook payload format.
    #[arg(long, value_enum, default_value = "CloudEvents")]
    pub payload_format: PayloadFormat,
    /// Let Harbor skip TLS verification when calling the preheater (webhook and provider).
    #[arg(long)]
    pub skip_cert_verify: bool,
    /// Do not touch the webhook policy.
    #[arg(long)]
    pub skip_webhook: bool,

    /// Name of the P2P provider instance.
    #[arg(long, default_value = "damselfly", value_name = "NAME")]
    pub instance_name: String,
    /// How Harbor authenticates to the provider API [default: oauth with --provider-token,
    /// basic with --provider-basic, else none].
    #[arg(long, value_enum)]
    pub auth_mode: Option<AuthMode>,
    /// Token Harbor presents as `Bearer` (OAUTH mode).
    #[arg(
        long,
        env = "DAMSELFLY_HARBOR_PROVIDER_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub provider_token: Option<String>,
    /// USER:PASSWORD Harbor presents as Basic (BASIC mode).
    #[arg(
        long,
        env = "DAMSELFLY_HARBOR_PROVIDER_BASIC",
        value_name = "USER:PASSWORD",
        hide_env_values = true
    )]
    pub provider_basic: Option<String>,
    /// Name of the project preheat policy.
    #[arg(long, default_value = "damselfly-preheat", value_name = "NAME")]
    pub policy_name: String,
    /// Repository filter of the preheat policy (Harbor doublestar pattern).
    #[arg(long, default_value = "**", value_name = "PATTERN")]
    pub repositories: String,
    /// Tag filter of the preheat policy.
    #[arg(long, default_value = "**", value_name = "PATTERN")]
    pub tags: String,
    /// When the preheat policy runs.
    #[arg(long, value_enum, default_value = "event-based")]
    pub trigger: Trigger,
    /// Cron expression for --trigger scheduled (Harbor's six fields, e.g. "0 0 * * * *").
    #[arg(long, default_value = "", value_name = "CRON")]
    pub cron: String,
    /// Which edges warm: single_seed_peer, all_seed_peers or all_peers (Harbor ≥ 2.12).
    #[arg(long, value_name = "SCOPE", value_parser = parse_scope)]
    pub scope: Option<Scope>,
    /// Scheduler cluster ids the policy targets (Harbor ≥ 2.13; mapped to regions by the
    /// preheater's `[[harbor.clusters]]`).
    #[arg(long = "cluster-id", value_delimiter = ',', value_name = "ID")]
    pub cluster_ids: Vec<u64>,
    /// Do not touch the provider instance and preheat policy.
    #[arg(long)]
    pub skip_preheat: bool,

    /// Read Harbor's current state and print the requests that would change it; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Timeout of one request to Harbor, in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub timeout_secs: u64,
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    Scope::parse(s)
}

impl RegisterArgs {
    pub fn client(&self) -> Result<HarborClient, HarborError> {
        let credentials = match (&self.username, &self.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            (None, None) => None,
            _ => {
                return Err(HarborError::Invalid(
                    "give both --username and --password (or HARBOR_USERNAME and HARBOR_PASSWORD)".into(),
                ))
            }
        };
        HarborClient::new(
            &self.harbor,
            credentials,
            self.harbor_insecure,
            Duration::from_secs(self.timeout_secs),
        )
    }

    pub fn registration(&self) -> Result<Registration, HarborError> {
        let invalid = |m: String| Err(HarborError::Invalid(m));
        if reqwest::Url::parse(&self.preheater).map(|u| u.scheme().starts_with("http")) != Ok(true) {
            return invalid(format!("--preheater {:?} must be an http(s) URL", self.preheater));
        }
        if self.project.trim().is_empty() {
            return invalid("--project must not be empty".into());
        }
        let mode = self
            .auth_mode
            .unwrap_or(match (&self.provider_token, &self.provider_basic) {
                (Some(_), _) => AuthMode::Oauth,
                (None, Some(_)) => AuthMode::Basic,
                (None, None) => AuthMode::None,
            });
        let (auth_mode, auth_info) = match mode {
            AuthMode::None => ("NONE", BTreeMap::new()),
            AuthMode::Oauth => match &self.provider_token {
                Some(t) if !t.trim().is_empty() => {
                    ("OAUTH", BTreeMap::from([("token".to_string(), t.clone())]))
                }
                _ => return invalid("--auth-mode oauth needs --provider-token".into()),
            },
            // Harbor sends the first auth_info entry as user:password, so store exactly one.
            AuthMode::Basic => match self.provider_basic.as_deref().and_then(|b| b.split_once(':')) {
                Some((user, password)) if !user.is_empty() => (
                    "BASIC",
                    BTreeMap::from([(user.to_string(), password.to_string())]),
                ),
                _ => return invalid("--auth-mode basic needs --provider-basic USER:PASSWORD".into()),
            },
        };
        if self.trigger == Trigger::Scheduled && self.cron.trim().is_empty() {
            return invalid("--trigger scheduled needs --cron".into());
        }
        let trigger = match self.trigger {
            Trigger::EventBased => "event_based",
            Trigger::Manual => "manual",
            Trigger::Scheduled => "scheduled",
        };
        let webhook = (!self.skip_webhook).then(|| WebhookSpec {
            name: self.webhook_name.clone(),
            auth_header: self.webhook_auth.clone(),
            event_types: self.event_types.clone(),
            payload_format: match self.payload_format {
                PayloadFormat::CloudEvents => "CloudEvents".into(),
                PayloadFormat::Default => "Default".into(),
            },
            skip_cert_verify: self.skip_cert_verify,
        });
        let preheat = (!self.skip_preheat).then(|| {
            (
                ProviderSpec {
                    name: self.instance_name.clone(),
                    auth_mode: auth_mode.into(),
                    auth_info,
                    insecure: self.skip_cert_verify,
                },
                PolicySpec {
                    name: self.policy_name.clone(),
                    repositories: self.repositories.clone(),
                    tags: self.tags.clone(),
                    trigger: trigger.into(),
                    cron: self.cron.clone(),
                    scope: self.scope,
                    cluster_ids: self.cluster_ids.clone(),
                },
            )
        });
        Ok(Registration {
            project: self.project.clone(),
            preheater: self.preheater.clone(),
            webhook,
            preheat,
            dry_run: self.dry_run,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Registration, String> {
        let mut argv = vec![
            "harbor-integration",
            "register",
            "--harbor",
            "https://harbor.example.com",
            "--project",
            "library",
            "--preheater",
            "http://preheater.internal:5090",
        ];
        argv.extend(extra);
        let Command::Register(a) = Cli::try_parse_from(argv).map_err(|e| e.to_string())?.command;
        a.registration().map_err(|e| e.to_string())
    }

    #[test]
    fn the_auth_mode_follows_the_credential_given() {
        let (provider, _) = args(&[]).unwrap().preheat.unwrap();
        assert_eq!(
            (provider.auth_mode.as_str(), provider.auth_info.len()),
            ("NONE", 0)
        );
        let (provider, _) = args(&["--provider-token", "t0k"]).unwrap().preheat.unwrap();
        assert_eq!(provider.auth_mode, "OAUTH");
        assert_eq!(
            provider.auth_info,
            BTreeMap::from([("token".into(), "t0k".into())])
        );
        // Harbor sends the first auth_info entry as user:password: exactly one entry.
        let (provider, _) = args(&["--provider-basic", "harbor:pw:with:colons"])
            .unwrap()
            .preheat
            .unwrap();
        assert_eq!(provider.auth_mode, "BASIC");
        assert_eq!(
            provider.auth_info,
            BTreeMap::from([("harbor".into(), "pw:with:colons".into())])
        );
        assert!(args(&["--auth-mode", "oauth"])
            .unwrap_err()
            .contains("--provider-token"));
        assert!(args(&["--trigger", "scheduled"]).unwrap_err().contains("--cron"));
        assert!(args(&["--scope", "some_peers"]).is_err());
        assert!(args(&["--preheater", "preheater:5090"]).is_err());
        let r = args(&["--skip-webhook", "--skip-preheat"]).unwrap();
        assert!(r.webhook.is_none() && r.preheat.is_none());
    }
}
