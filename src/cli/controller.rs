//! `keywire controller`: its flags, turned into the controller's `Config`, then run under one
//! tokio runtime until SIGTERM.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::cli::{DefaultsArgs, EXIT_BAD_INPUT, EXIT_OK, one_line};
use crate::controller::identity::IdentitySettings;
use crate::controller::keyvault::AzureSettings;
use crate::controller::leader::LeaseConfig;
use crate::controller::reconcile::LoopSettings;
use crate::controller::{self, Config};
use crate::core::plan::TOKEN_AUDIENCE;

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Plain HTTP listener for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// How often synced values are read again from Key Vault (one read per object per identity
    /// per interval, however many pods share it).
    #[arg(long, default_value_t = 120)]
    pub rotation_interval_seconds: u64,
    /// Up to this fraction of the interval is added at random to each namespace's next poll.
    #[arg(long, default_value_t = 0.1)]
    pub rotation_jitter: f64,
    /// How long a SecretProviderClass or Secret nobody uses any more is kept before deletion.
    #[arg(long, default_value_t = 300)]
    pub gc_grace_seconds: u64,
    /// Retry a failed sync after this long (unless Key Vault's Retry-After says otherwise).
    #[arg(long, default_value_t = 30)]
    pub retry_seconds: u64,
    /// Changes within this window are reconciled together (a rollout is one reconcile).
    #[arg(long, default_value_t = 200)]
    pub debounce_millis: u64,
    /// Audience of the ServiceAccount tokens exchanged at Entra (sovereign clouds use others).
    #[arg(long, default_value = TOKEN_AUDIENCE)]
    pub token_audience: String,
    /// Lifetime of each ServiceAccount token the controller requests (at least 600).
    #[arg(long, default_value_t = 600)]
    pub token_expiration_seconds: i64,
    /// Key Vault URL for one vault, as NAME=URL, instead of https://NAME.<cloud suffix>.
    /// Repeatable (private endpoints, custom clouds, tests).
    #[arg(long = "keyvault-endpoint", value_name = "NAME=URL")]
    pub keyvault_endpoints: Vec<String>,
    /// Key Vault DNS suffix for every vault (default: from each config's cloudName).
    #[arg(long)]
    pub keyvault_dns_suffix: Option<String>,
    /// Seconds before a Key Vault or Entra request is abandoned.
    #[arg(long, default_value_t = 10)]
    pub keyvault_timeout_seconds: u64,
    /// Trust only these CA certificates (PEM) for Entra and Key Vault, instead of the system's.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    #[arg(long, default_value = "keywire-controller")]
    pub lease_name: String,
    /// This replica's name in the Lease (a random suffix is added).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// A leader that has not renewed for this long may be replaced.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_seconds: u64,
    #[arg(long, default_value_t = 5)]
    pub lease_renew_seconds: u64,
    #[arg(long, default_value_t = 2)]
    pub lease_retry_seconds: u64,
    /// Watch KeywirePolicy objects (needs their CRD). `false` for clusters without policies.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub policies: bool,
    /// Write a policy Report (openreports.io/v1alpha1) per namespace: `auto` when the API server
    /// serves the Report CRD, `true` or `false`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "true", "false"])]
    pub policy_reports: String,
    #[command(flatten)]
    pub defaults: DefaultsArgs,
}

impl ControllerArgs {
    pub fn config(&self) -> Result<Config, String> {
        let mut endpoints = BTreeMap::new();
        for e in &self.keyvault_endpoints {
            let Some((name, url)) = e.split_once('=').filter(|(n, u)| {
                !n.is_empty() && (u.starts_with("https://") || u.starts_with("http://"))
            }) else {
                return Err(format!(
                    "--keyvault-endpoint {e:?}: expected NAME=https://HOST[:PORT]"
                ));
            };
            endpoints.insert(
                name.to_ascii_lowercase(),
                url.trim_end_matches('/').to_string(),
            );
        }
        if self.token_expiration_seconds < 600 {
            return Err(format!(
                "--token-expiration-seconds {}: the API server issues tokens of 600 seconds or more",
                self.token_expiration_seconds
            ));
        }
        if !(0.0..=1.0).contains(&self.rotation_jitter) {
            return Err(format!(
                "--rotation-jitter {}: a fraction from 0 to 1",
                self.rotation_jitter
            ));
        }
        if self.lease_renew_seconds >= self.lease_duration_seconds {
            return Err(format!(
                "--lease-renew-seconds ({}) must be below --lease-duration-seconds ({})",
                self.lease_renew_seconds, self.lease_duration_seconds
            ));
        }
        let host = self
            .identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "keywire-controller".to_string());
        Ok(Config {
            metrics_listen: self.metrics_listen,
            settings: self.defaults.settings()?,
            identity: IdentitySettings {
                authority_host: self.defaults.authority_host.clone(),
                token_audience: self.token_audience.clone(),
                token_seconds: self.token_expiration_seconds,
            },
            azure: AzureSettings {
                endpoints,
                dns_suffix: self.keyvault_dns_suffix.clone(),
                timeout: Duration::from_secs(self.keyvault_timeout_seconds.max(1)),
            },
            ca_file: self.ca_file.clone(),
            loop_settings: LoopSettings {
                rotation_interval: Duration::from_secs(self.rotation_interval_seconds.max(1)),
                jitter: self.rotation_jitter,
                gc_grace: Duration::from_secs(self.gc_grace_seconds),
                retry: Duration::from_secs(self.retry_seconds.max(1)),
            },
            lease: LeaseConfig {
                namespace: self.lease_namespace.clone(),
                name: self.lease_name.clone(),
                identity: format!("{host}_{:08x}", fastrand::u32(..)),
                lease_duration: Duration::from_secs(self.lease_duration_seconds),
                renew_interval: Duration::from_secs(self.lease_renew_seconds.max(1)),
                retry_interval: Duration::from_secs(self.lease_retry_seconds.max(1)),
            },
            debounce: Duration::from_millis(self.debounce_millis),
            watch_policies: self.policies,
            policy_reports: match self.policy_reports.as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
        })
    }
}

pub fn run(args: ControllerArgs) -> i32 {
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keywire controller: {}", one_line(e));
            return EXIT_BAD_INPUT;
        }
    };
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keywire controller: cannot start runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(controller::run(config)) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            tracing::error!(error = %one_line(format!("{e:#}")), "controller failed");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut full = vec!["keywire", "controller"];
        full.extend_from_slice(args);
        match crate::cli::Cli::try_parse_from(full)
            .map_err(|e| e.to_string())?
            .command
        {
            crate::cli::Command::Controller(a) => a.config(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn defaults_and_endpoints() {
        let c = parse(&["--keyvault-endpoint", "KV-A=https://127.0.0.1:8443/"]).unwrap();
        assert_eq!(c.azure.endpoints["kv-a"], "https://127.0.0.1:8443");
        assert_eq!(c.identity.token_audience, "api://AzureADTokenExchange");
        assert_eq!(c.loop_settings.rotation_interval, Duration::from_secs(120));
        assert_eq!(c.lease.lease_duration, Duration::from_secs(15));
    }

    #[test]
    fn bad_flags_name_the_flag() {
        for (args, want) in [
            (vec!["--keyvault-endpoint", "kv"], "--keyvault-endpoint"),
            (
                vec!["--token-expiration-seconds", "60"],
                "--token-expiration-seconds",
            ),
            (vec!["--rotation-jitter", "2"], "--rotation-jitter"),
            (vec!["--lease-renew-seconds", "20"], "--lease-renew-seconds"),
        ] {
            let e = parse(&args).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}
