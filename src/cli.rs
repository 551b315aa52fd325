//! The command line: clap arguments -> typed config -> command. Every command returns its exit code.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::admission;
use crate::certs;
use crate::lookup::ClusterState;
use crate::manifests;
use crate::plan::{DEFAULT_AUTHORITY_HOST, DEFAULT_CLOUD_NAME, Settings};
use crate::report;
use crate::server::{self, WebhookConfig};

#[derive(Debug, Parser)]
#[command(
    name = "keywire",
    version,
    about = "Wire Kubernetes pods to Azure Key Vault"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the mutating admission webhook over HTTPS.
    Webhook(WebhookArgs),
    /// Answer one AdmissionReview (file or stdin) exactly as the webhook would.
    Review(ReviewArgs),
    /// Mutate manifests offline, as the webhook would mutate their pods (CI dry run).
    Mutate(MutateArgs),
    /// Write a CA and a serving certificate for the webhook, and print the caBundle.
    Certs(CertsArgs),
}

/// Cluster-wide defaults shared by every front door.
#[derive(Debug, Clone, Args)]
pub struct DefaultsArgs {
    /// Tenant used when neither the pod nor its ServiceAccount names one.
    #[arg(long, env = "KEYWIRE_TENANT_ID")]
    pub tenant_id: Option<String>,
    /// AZURE_AUTHORITY_HOST injected into workload-identity pods.
    #[arg(long, env = "KEYWIRE_AUTHORITY_HOST", default_value = DEFAULT_AUTHORITY_HOST)]
    pub authority_host: String,
    /// cloudName written into materialised SecretProviderClasses.
    #[arg(long, env = "KEYWIRE_CLOUD_NAME", default_value = DEFAULT_CLOUD_NAME)]
    pub cloud_name: String,
}

impl DefaultsArgs {
    pub fn settings(&self) -> Settings {
        Settings {
            default_tenant_id: self.tenant_id.clone().filter(|t| !t.is_empty()),
            authority_host: self.authority_host.clone(),
            cloud_name: self.cloud_name.clone(),
            default_mount_path: None,
            default_identity: None,
        }
    }
}

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
    /// Seconds a client may take to send request headers.
    #[arg(long, default_value_t = 10)]
    pub header_read_timeout_seconds: u64,
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
    pub self_managed: crate::selfcert::SelfCertArgs,
    #[command(flatten)]
    pub defaults: DefaultsArgs,
}

#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// AdmissionReview JSON; `-` or nothing for stdin.
    pub file: Option<PathBuf>,
    /// Answer as the validating webhook (`/validate`) instead of the mutating one.
    #[arg(long)]
    pub validate: bool,
    #[arg(long)]
    pub cluster_state: Option<PathBuf>,
    #[command(flatten)]
    pub defaults: DefaultsArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct MutateArgs {
    /// Manifests (multi-document YAML, JSON or List); `-` for stdin. Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    #[arg(long)]
    pub cluster_state: Option<PathBuf>,
    #[arg(short = 'o', long, value_enum, default_value = "yaml")]
    pub output: OutputFormat,
    /// Print a unified diff of each changed object instead of the manifests.
    #[arg(long)]
    pub diff: bool,
    /// Namespace for objects that do not name one.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// KeywirePolicy manifests to judge the objects by. Repeatable; policies in
    /// `--cluster-state` and in the input count too.
    #[arg(long = "policy")]
    pub policies: Vec<PathBuf>,
    /// Extra reports: `junit=FILE` (JUnit XML) or `github` (Actions annotations on stderr). Repeatable.
    #[arg(long = "report")]
    pub reports: Vec<String>,
    /// Exit 1 on Warn and Audit violations too.
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub defaults: DefaultsArgs,
}

/// Where a `--report` goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Junit(PathBuf),
    Github,
}

impl std::str::FromStr for Report {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some(("junit", file)) if !file.is_empty() => Ok(Report::Junit(PathBuf::from(file))),
            None if s == "github" => Ok(Report::Github),
            _ => Err(format!("--report {s:?}: expected junit=FILE or github")),
        }
    }
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    #[arg(long)]
    pub out_dir: PathBuf,
    /// DNS name or IP address for the serving certificate. Repeatable.
    #[arg(long = "host", required = true)]
    pub hosts: Vec<String>,
    #[arg(long, default_value_t = 365)]
    pub days: i64,
}

/// Exit codes of `keywire mutate` (and `review` for unreadable input).
pub const EXIT_OK: i32 = 0;
pub const EXIT_DENIED: i32 = 1;
pub const EXIT_BAD_INPUT: i32 = 2;

fn one_line(s: impl std::fmt::Display) -> String {
    s.to_string().replace('\n', " ")
}

fn read_input(path: Option<&Path>) -> Result<String, String> {
    match path {
        None => read_stdin(),
        Some(p) if p == Path::new("-") => read_stdin(),
        Some(p) => {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        }
    }
}

fn read_stdin() -> Result<String, String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    Ok(s)
}

fn load_state(path: Option<&Path>) -> Result<ClusterState, String> {
    match path {
        Some(p) => ClusterState::from_file(p).map_err(|e| e.to_string()),
        None => Ok(ClusterState::new()),
    }
}

pub fn review(args: &ReviewArgs) -> i32 {
    let result = (|| {
        let state = load_state(args.cluster_state.as_deref())?;
        let body = read_input(args.file.as_deref())?;
        let endpoint = if args.validate {
            admission::Endpoint::Validate
        } else {
            admission::Endpoint::Mutate
        };
        admission::review(body.as_bytes(), endpoint, &state, &args.defaults.settings())
            .map_err(|e| e.to_string())
    })();
    match result {
        Ok(reviewed) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&reviewed.body);
            let _ = out.write_all(b"\n");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("keywire review: {}", one_line(e));
            EXIT_BAD_INPUT
        }
    }
}

pub fn mutate(args: &MutateArgs) -> i32 {
    let bad = |e: String| {
        eprintln!("keywire mutate: {}", one_line(e));
        EXIT_BAD_INPUT
    };
    let reports: Vec<Report> = match args.reports.iter().map(|r| r.parse()).collect() {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    let mut state = match load_state(args.cluster_state.as_deref()) {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    for file in &args.policies {
        let loaded = read_input(Some(file))
            .and_then(|text| manifests::parse_documents(&text))
            .and_then(|docs| {
                let mut n = 0;
                for doc in docs.iter().filter(|d| crate::policy::Policy::is_policy(d)) {
                    state.insert_object(doc)?;
                    n += 1;
                }
                if n == 0 {
                    Err("no KeywirePolicy in the file".to_string())
                } else {
                    Ok(())
                }
            });
        if let Err(e) = loaded {
            return bad(format!("--policy {}: {e}", file.display()));
        }
    }
    let mut objects = Vec::new();
    for file in &args.files {
        let parsed = read_input(Some(file)).and_then(|text| {
            manifests::parse_documents(&text).map_err(|e| format!("{}: {e}", file.display()))
        });
        match parsed {
            Ok(docs) => objects.extend(docs.into_iter().map(|d| (file.display().to_string(), d))),
            Err(e) => return bad(e),
        }
    }
    // ServiceAccounts, Namespaces and policies shipped with the manifests are what the cluster will hold.
    for (_, o) in &objects {
        if let Err(e) = state.insert_object(o) {
            return bad(e);
        }
    }
    let settings = args.defaults.settings();
    let mutated: Vec<(String, manifests::Mutated)> = objects
        .iter()
        .map(|(file, o)| {
            (
                file.clone(),
                manifests::mutate(o, &args.namespace, &state, &settings),
            )
        })
        .collect();
    let results = report::results(&mutated);

    for r in &results {
        for w in &r.warnings {
            eprintln!("warning: {}: {w}", r.object);
        }
        if let Some(reason) = &r.denial {
            eprintln!("denied: {}: {reason}", r.object);
        }
    }
    eprint!("{}", report::table(&results));
    for r in &reports {
        match r {
            Report::Github => eprint!("{}", report::github(&results)),
            Report::Junit(file) => {
                if let Err(e) = std::fs::write(file, report::junit(&results, args.strict)) {
                    return bad(format!("cannot write {}: {e}", file.display()));
                }
            }
        }
    }

    let rendered = if args.diff {
        Ok(mutated
            .iter()
            .map(|(_, m)| manifests::diff(m))
            .collect::<String>())
    } else {
        let out: Vec<_> = mutated.iter().map(|(_, m)| m.mutated.clone()).collect();
        match args.output {
            OutputFormat::Yaml => manifests::to_yaml(&out),
            OutputFormat::Json => manifests::to_json(&out, &results),
        }
    };
    match rendered {
        Ok(text) => {
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
        }
        Err(e) => return bad(format!("cannot render output: {e}")),
    }
    if results.iter().any(|r| !r.allowed) || (args.strict && report::has_soft_violations(&results))
    {
        EXIT_DENIED
    } else {
        EXIT_OK
    }
}

pub fn certs(args: &CertsArgs) -> i32 {
    let result = certs::generate(&args.hosts, args.days)
        .and_then(|bundle| certs::write_bundle(&args.out_dir, &bundle).map(|_| bundle));
    match result {
        Ok(bundle) => {
            eprintln!(
                "wrote {0}/ca.crt, {0}/tls.crt and {0}/tls.key for {1}; caBundle follows",
                args.out_dir.display(),
                args.hosts.join(", ")
            );
            println!("{}", bundle.ca_bundle());
            EXIT_OK
        }
        Err(e) => {
            eprintln!("keywire certs: {}", one_line(e));
            EXIT_BAD_INPUT
        }
    }
}

pub fn webhook(args: WebhookArgs) -> i32 {
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
    let config = WebhookConfig {
        listen: args.listen,
        tls_cert_file: args.tls_cert_file,
        tls_key_file: args.tls_key_file,
        metrics_listen: args.metrics_listen,
        cluster_state: args.cluster_state,
        settings: args.defaults.settings(),
        max_body_bytes: args.max_body_bytes,
        header_read_timeout: Duration::from_secs(args.header_read_timeout_seconds),
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
            crate::selfcert::start(self_managed).await?;
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

pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Webhook(args) => webhook(args),
        Command::Review(args) => review(&args),
        Command::Mutate(args) => mutate(&args),
        Command::Certs(args) => certs(&args),
    }
}
