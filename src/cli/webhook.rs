//! `keywire webhook`: its flags, turned into the server's `WebhookConfig` (and the self-managed
//! certificates' `SelfCertConfig`), then run under one tokio runtime until SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::cli::{DefaultsArgs, EXIT_BAD_INPUT, EXIT_OK, cluster_state, one_line};
use crate::webhook::selfcert::{self, Rotation, SelfCertConfig, SelfCertError};
use crate::webhook::server::{self, WebhookConfig};

#[derive(Debug, Args)]
pub struct WebhookArgs {
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    #[arg(long)]
    pub tls_cert_file: PathBuf,
    #[arg(long)]
    pub tls_key_file: PathBuf,
    /// Plain HTTP listener for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// Serve lookups from this file of Kubernetes objects instead of the API server.
    #[arg(long)]
    pub cluster_state: Option<PathBuf>,
    /// Largest accepted request body; larger ones get 413.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Request-body bytes held at once across all requests in flight; beyond it, 503 with
    /// Retry-After. Bounds the memory that many large or stalled bodies can take.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub body_budget_bytes: usize,
    /// Seconds a client may take to send request headers.
    #[arg(long, default_value_t = 10)]
    pub header_read_timeout_seconds: u64,
    /// Seconds a client may take to send the request body once the headers are in (408 beyond).
    #[arg(long, default_value_t = 10)]
    pub body_read_timeout_seconds: u64,
    /// Open connections (TLS handshakes included) beyond which new ones are closed on accept.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Seconds a connection may sit with no request in flight before it is closed (HTTP/1.1
    /// and h2). Above the API server's 90 s client idle timeout, so it closes its side first.
    #[arg(long, default_value_t = 120)]
    pub idle_timeout_seconds: u64,
    /// Seconds a client may take to finish the TLS handshake.
    #[arg(long, default_value_t = 10)]
    pub tls_handshake_timeout_seconds: u64,
    /// Seconds to drain in-flight requests after SIGTERM.
    #[arg(long, default_value_t = 20)]
    pub shutdown_grace_seconds: u64,
    /// How often to check the certificate files for a rotation.
    #[arg(long, default_value_t = 2)]
    pub cert_reload_seconds: u64,
    /// Watch KeywirePolicy objects (needs their CRD). `false` for clusters without policies.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub policies: bool,
    #[command(flatten)]
    pub self_managed: SelfCertArgs,
    #[command(flatten)]
    pub defaults: DefaultsArgs,
}

/// `keywire webhook` flags for self-managed certificates (flattened into its arguments).
#[derive(Debug, Clone, Default, Args)]
pub struct SelfCertArgs {
    /// Bootstrap, rotate and publish the webhook's own CA and serving certificate. keywire then
    /// writes --tls-cert-file and --tls-key-file itself (point them at an emptyDir).
    #[arg(long)]
    pub self_managed_certs: bool,
    /// NAMESPACE/NAME of the Secret holding the CA and serving pair; created if absent.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub cert_secret: Option<String>,
    /// MutatingWebhookConfiguration whose caBundle keywire keeps current. Repeatable.
    #[arg(long = "webhook-config", value_name = "NAME")]
    pub mutating_configs: Vec<String>,
    /// ValidatingWebhookConfiguration whose caBundle keywire keeps current. Repeatable.
    #[arg(long = "validating-webhook-config", value_name = "NAME")]
    pub validating_configs: Vec<String>,
    /// DNS name or IP address the serving certificate is for (the Service's names). Repeatable.
    #[arg(long = "service-host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Lifetime of each CA and serving certificate.
    #[arg(long, default_value_t = 365)]
    pub cert_validity_days: i64,
    /// Rotate when the serving certificate or its CA has less than this left.
    #[arg(long, default_value_t = 30)]
    pub cert_renew_before_days: i64,
    /// How long a new CA is trusted before it is served, and the old one after.
    #[arg(long, default_value_t = 300)]
    pub cert_overlap_seconds: u64,
    /// How often each replica re-reads the Secret and the webhook configurations.
    #[arg(long, default_value_t = 5)]
    pub cert_check_seconds: u64,
}

impl SelfCertArgs {
    /// `None` unless --self-managed-certs; the files are the webhook's --tls-cert/key-file.
    pub fn config(
        &self,
        cert_file: &Path,
        key_file: &Path,
    ) -> Result<Option<SelfCertConfig>, SelfCertError> {
        if !self.self_managed_certs {
            return Ok(None);
        }
        let secret = self
            .cert_secret
            .as_deref()
            .ok_or(SelfCertError::Missing("--cert-secret NAMESPACE/NAME"))?;
        let (namespace, name) = secret
            .split_once('/')
            .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| SelfCertError::SecretName(secret.to_string()))?;
        if self.hosts.is_empty() {
            return Err(SelfCertError::Missing("at least one --service-host"));
        }
        if self.mutating_configs.is_empty() && self.validating_configs.is_empty() {
            return Err(SelfCertError::Missing(
                "--webhook-config or --validating-webhook-config",
            ));
        }
        let check = self.cert_check_seconds.max(1);
        if self.cert_overlap_seconds < 3 * check {
            return Err(SelfCertError::Timing(format!(
                "--cert-overlap-seconds ({}) must be at least 3 x --cert-check-seconds ({check}): \
                 every replica must see each step before the next one",
                self.cert_overlap_seconds
            )));
        }
        if self.cert_renew_before_days < 0 || self.cert_renew_before_days >= self.cert_validity_days
        {
            return Err(SelfCertError::Timing(format!(
                "--cert-renew-before-days ({}) must be from 0 to below --cert-validity-days ({})",
                self.cert_renew_before_days, self.cert_validity_days
            )));
        }
        Ok(Some(SelfCertConfig {
            secret_namespace: namespace.to_string(),
            secret_name: name.to_string(),
            mutating_configs: self.mutating_configs.clone(),
            validating_configs: self.validating_configs.clone(),
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            rotation: Rotation {
                hosts: self.hosts.clone(),
                validity_days: self.cert_validity_days,
                renew_before_secs: self.cert_renew_before_days * 86_400,
                overlap_secs: self.cert_overlap_seconds as i64,
            },
            check_interval: Duration::from_secs(check),
        }))
    }
}

pub fn run(args: WebhookArgs) -> i32 {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let self_managed = match args
        .self_managed
        .config(&args.tls_cert_file, &args.tls_key_file)
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keywire webhook: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    if args.body_budget_bytes < args.max_body_bytes {
        eprintln!(
            "keywire webhook: --body-budget-bytes ({}) must be at least --max-body-bytes ({}): \
             otherwise a body within the limit could never be read",
            args.body_budget_bytes, args.max_body_bytes
        );
        return EXIT_BAD_INPUT;
    }
    let lookups = match &args.cluster_state {
        Some(path) => match cluster_state::load(path) {
            Ok(state) => Some(state),
            Err(e) => {
                eprintln!("keywire webhook: {}", one_line(e));
                return EXIT_BAD_INPUT;
            }
        },
        None => None,
    };
    let settings = match args.defaults.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("keywire webhook: {}", one_line(e));
            return EXIT_BAD_INPUT;
        }
    };
    let config = WebhookConfig {
        listen: args.listen,
        tls_cert_file: args.tls_cert_file,
        tls_key_file: args.tls_key_file,
        metrics_listen: args.metrics_listen,
        cluster_state: lookups,
        settings,
        discover_kubernetes_version: args.defaults.workload_identity.kubernetes_version.is_none(),
        max_body_bytes: args.max_body_bytes,
        body_budget_bytes: args.body_budget_bytes,
        body_read_timeout: Duration::from_secs(args.body_read_timeout_seconds.max(1)),
        header_read_timeout: Duration::from_secs(args.header_read_timeout_seconds),
        max_connections: args.max_connections.max(1),
        idle_timeout: Duration::from_secs(args.idle_timeout_seconds.max(1)),
        tls_handshake_timeout: Duration::from_secs(args.tls_handshake_timeout_seconds.max(1)),
        shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
        cert_reload_interval: Duration::from_secs(args.cert_reload_seconds.max(1)),
        watch_policies: args.policies,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keywire webhook: cannot start runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(async {
        // Self-managed certificates are on disk and trusted before the server loads them.
        if let Some(self_managed) = self_managed {
            selfcert::start(self_managed).await?;
        }
        server::run(config).await
    }) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            tracing::error!(error = %one_line(format!("{e:#}")), "webhook failed");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn flags_become_a_config_and_bad_ones_name_the_flag() {
        let args = SelfCertArgs {
            self_managed_certs: true,
            cert_secret: Some("keywire/keywire-webhook-tls".into()),
            mutating_configs: vec!["keywire".into()],
            hosts: vec!["keywire.keywire.svc".into()],
            cert_validity_days: 365,
            cert_renew_before_days: 30,
            cert_overlap_seconds: 300,
            cert_check_seconds: 5,
            ..SelfCertArgs::default()
        };
        let (c, k) = (Path::new("/certs/tls.crt"), Path::new("/certs/tls.key"));
        let config = args.config(c, k).unwrap().unwrap();
        assert_eq!(config.secret_namespace, "keywire");
        assert_eq!(config.secret_name, "keywire-webhook-tls");
        assert_eq!(config.rotation.renew_before_secs, 30 * DAY);
        assert!(SelfCertArgs::default().config(c, k).unwrap().is_none());
        let bad = |f: fn(&mut SelfCertArgs)| {
            let mut a = args.clone();
            f(&mut a);
            a.config(c, k).unwrap_err().to_string()
        };
        assert!(bad(|a| a.cert_secret = Some("no-namespace".into())).contains("NAMESPACE/NAME"));
        assert!(bad(|a| a.cert_secret = None).contains("--cert-secret"));
        assert!(bad(|a| a.hosts.clear()).contains("--service-host"));
        assert!(bad(|a| a.mutating_configs.clear()).contains("--webhook-config"));
        assert!(bad(|a| a.cert_overlap_seconds = 10).contains("--cert-overlap-seconds"));
        assert!(bad(|a| a.cert_renew_before_days = 365).contains("--cert-renew-before-days"));
    }
}
