//! The command line: clap arguments -> typed config -> command. Every command returns its exit code.
//!
//! One file per command: `mutate` (CI dry run over manifests), `review` (one AdmissionReview),
//! `certs` (webhook certificates), `webhook` and `controller` (the servers' flags). The manifest reader and
//! writer, the cluster-state file and the CI reports sit beside them.

use std::io::Read;
use std::path::Path;

use clap::{Args, Parser, Subcommand};

use crate::core::plan::{DEFAULT_AUTHORITY_HOST, DEFAULT_CLOUD_NAME, Settings};

pub mod certs;
pub mod cluster_state;
pub mod controller;
pub mod manifests;
pub mod mutate;
pub mod report;
pub mod review;
pub mod webhook;

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
    Webhook(webhook::WebhookArgs),
    /// Answer one AdmissionReview (file or stdin) exactly as the webhook would.
    Review(review::ReviewArgs),
    /// Mutate manifests offline, as the webhook would mutate their pods (CI dry run).
    Mutate(mutate::MutateArgs),
    /// Write a CA and a serving certificate for the webhook, and print the caBundle.
    Certs(certs::CertsArgs),
    /// Materialise SecretProviderClasses and fill synced Secrets from Key Vault.
    Controller(Box<controller::ControllerArgs>),
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

pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Webhook(args) => webhook::run(args),
        Command::Review(args) => review::run(&args),
        Command::Mutate(args) => mutate::run(&args),
        Command::Certs(args) => certs::run(&args),
        Command::Controller(args) => controller::run(*args),
    }
}
