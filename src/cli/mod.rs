//! The command line: clap arguments -> typed config -> command. Every command returns its exit code.
//!
//! One file per command: `mutate` (CI dry run over manifests), `review` (one AdmissionReview),
//! `certs` (webhook certificates), `webhook` and `controller` (the servers' flags). The manifest reader and
//! writer, the cluster-state file and the CI reports sit beside them.

use std::io::Read;
use std::path::Path;

use clap::{Args, Parser, Subcommand};

use crate::core::azure;
use crate::core::plan::{DEFAULT_AUTHORITY_HOST, DEFAULT_CLOUD_NAME, Settings};

pub mod certs;
pub mod cluster_state;
pub mod controller;
pub mod manifests;
pub mod mutate;
pub mod ordered;
pub mod report;
pub mod review;
pub mod spool;
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
    Webhook(Box<webhook::WebhookArgs>),
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
    #[command(flatten)]
    pub workload_identity: WorkloadIdentityArgs,
}

/// How workload identity is wired, for keywire's own pods and the Azure Workload Identity
/// drop-in alike (upstream's flags and environment, under these names).
#[derive(Debug, Clone, Args)]
pub struct WorkloadIdentityArgs {
    /// Token layout: v1.6 (upstream v1.6.0: volume azure-workload-identity-reserved-<hash> at
    /// /var/run/secrets/azure/wi) or v1.5 (azure-identity-token at /var/run/secrets/azure/tokens).
    #[arg(long, default_value = "v1.6", value_parser = ["v1.6", "v1.5"])]
    pub workload_identity_layout: String,
    /// Audience of the projected token (upstream's --audience).
    #[arg(long, default_value = crate::core::azure::DEFAULT_AUDIENCE)]
    pub workload_identity_audience: String,
    /// Pods annotated azure.workload.identity/use-<SUFFIX>: "true" get the custom token endpoint
    /// (AKS identity bindings). Needs --custom-token-endpoint-audience.
    #[arg(long)]
    pub custom_token_endpoint_annotation_suffix: Option<String>,
    /// The custom token endpoint's token audience (not api://AzureADTokenExchange).
    #[arg(long)]
    pub custom_token_endpoint_audience: Option<String>,
    /// AZURE_KUBERNETES_TOKEN_PROXY for custom-token-endpoint pods.
    #[arg(long, env = "AZURE_KUBERNETES_TOKEN_PROXY")]
    pub azure_kubernetes_token_proxy: Option<String>,
    /// AZURE_KUBERNETES_SNI_NAME for custom-token-endpoint pods.
    #[arg(long, env = "AZURE_KUBERNETES_SNI_NAME")]
    pub azure_kubernetes_sni_name: Option<String>,
    /// The endpoint's CA, passed as AZURE_KUBERNETES_CA_DATA (one CA source at most).
    #[arg(long, env = "AZURE_KUBERNETES_CA_DATA")]
    pub azure_kubernetes_ca_data: Option<String>,
    /// The endpoint's CA from this ConfigMap's ca.crt, projected at ca-cert/ca.crt.
    #[arg(long, env = "AZURE_KUBERNETES_CA_CONFIGMAP_NAME")]
    pub azure_kubernetes_ca_configmap_name: Option<String>,
    /// The endpoint's CA from a ClusterTrustBundle projection of this signer.
    #[arg(long, env = "AZURE_KUBERNETES_CA_CTB_SIGNER_NAME")]
    pub azure_kubernetes_ca_ctb_signer_name: Option<String>,
    /// The ClusterTrustBundle projection's label selector, as JSON.
    #[arg(long, env = "AZURE_KUBERNETES_CA_CTB_LABEL_SELECTOR")]
    pub azure_kubernetes_ca_ctb_label_selector: Option<String>,
    /// Image of the azwi-proxy sidecar.
    #[arg(long, env = "PROXY_IMAGE", default_value = crate::core::azure::DEFAULT_PROXY_IMAGE)]
    pub proxy_image: String,
    /// Image of the azwi-proxy-init init container.
    #[arg(long, env = "PROXY_INIT_IMAGE", default_value = crate::core::azure::DEFAULT_PROXY_INIT_IMAGE)]
    pub proxy_init_image: String,
    /// --log-level given to the proxy sidecar.
    #[arg(long, default_value = "info")]
    pub proxy_log_level: String,
    /// The cluster's Kubernetes version: from 1.32 the proxy is a native sidecar. The webhook
    /// asks the API server when this is not given; offline it defaults to 1.35.
    #[arg(long)]
    pub kubernetes_version: Option<String>,
}

fn some(v: &Option<String>) -> Option<String> {
    v.clone().filter(|s| !s.is_empty())
}

impl WorkloadIdentityArgs {
    /// The settings, checked as upstream checks them at start-up; errors name the flag.
    pub fn settings(&self) -> Result<azure::Settings, String> {
        use crate::core::azure::{CaSource, CustomTokenEndpoint, Layout, ProxySettings};
        let layout = Layout::parse(&self.workload_identity_layout).ok_or_else(|| {
            format!(
                "--workload-identity-layout {:?}: v1.6 or v1.5",
                self.workload_identity_layout
            )
        })?;
        let native_sidecars = match &self.kubernetes_version {
            Some(v) => azure::has_native_sidecars(v).ok_or_else(|| {
                format!("--kubernetes-version {v:?}: a version like 1.35 or v1.35.4")
            })?,
            None => true,
        };
        let custom_token_endpoint = match (
            some(&self.custom_token_endpoint_annotation_suffix),
            some(&self.custom_token_endpoint_audience),
        ) {
            (None, None) => None,
            (Some(_), None) => {
                return Err("--custom-token-endpoint-audience is needed with --custom-token-endpoint-annotation-suffix".into());
            }
            (None, Some(_)) => {
                return Err("--custom-token-endpoint-annotation-suffix is needed with --custom-token-endpoint-audience".into());
            }
            (Some(suffix), Some(audience)) => {
                if audience.eq_ignore_ascii_case(azure::DEFAULT_AUDIENCE) {
                    return Err(format!(
                        "--custom-token-endpoint-audience {audience:?}: must differ from {}",
                        azure::DEFAULT_AUDIENCE
                    ));
                }
                let key = format!("{}{}", crate::core::annotations::azure::USE_PREFIX, suffix);
                let name = &key["azure.workload.identity/".len()..];
                let valid = name.len() <= 63
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                    && name.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && name.ends_with(|c: char| c.is_ascii_alphanumeric());
                if !valid {
                    return Err(format!(
                        "--custom-token-endpoint-annotation-suffix {suffix:?}: {key} is not a valid annotation key"
                    ));
                }
                let sources = [
                    some(&self.azure_kubernetes_ca_data).map(CaSource::Data),
                    some(&self.azure_kubernetes_ca_configmap_name).map(CaSource::ConfigMap),
                    some(&self.azure_kubernetes_ca_ctb_signer_name).map(|signer_name| {
                        CaSource::ClusterTrustBundle {
                            signer_name,
                            label_selector: None,
                        }
                    }),
                ];
                let mut set: Vec<CaSource> = sources.into_iter().flatten().collect();
                if set.len() > 1 {
                    return Err("only one of --azure-kubernetes-ca-data, --azure-kubernetes-ca-configmap-name and --azure-kubernetes-ca-ctb-signer-name can be set".into());
                }
                let mut ca = set.pop().unwrap_or_default();
                if let Some(selector) = some(&self.azure_kubernetes_ca_ctb_label_selector) {
                    let CaSource::ClusterTrustBundle { label_selector, .. } = &mut ca else {
                        return Err("--azure-kubernetes-ca-ctb-label-selector needs --azure-kubernetes-ca-ctb-signer-name".into());
                    };
                    let parsed: serde_json::Value = serde_json::from_str(&selector).map_err(|e| {
                        format!("--azure-kubernetes-ca-ctb-label-selector: not a JSON label selector: {e}")
                    })?;
                    *label_selector = Some(parsed);
                }
                Some(CustomTokenEndpoint {
                    annotation_suffix: suffix,
                    audience,
                    token_proxy: some(&self.azure_kubernetes_token_proxy),
                    sni_name: some(&self.azure_kubernetes_sni_name),
                    ca,
                })
            }
        };
        Ok(azure::Settings {
            layout,
            audience: self.workload_identity_audience.clone(),
            custom_token_endpoint,
            proxy: ProxySettings {
                image: self.proxy_image.clone(),
                init_image: self.proxy_init_image.clone(),
                log_level: self.proxy_log_level.clone(),
            },
            native_sidecars,
        })
    }
}

impl DefaultsArgs {
    pub fn settings(&self) -> Result<Settings, String> {
        Ok(Settings {
            default_tenant_id: self.tenant_id.clone().filter(|t| !t.is_empty()),
            authority_host: self.authority_host.clone(),
            cloud_name: self.cloud_name.clone(),
            default_mount_path: None,
            default_identity: None,
            workload_identity: self.workload_identity.settings()?,
        })
    }
}

/// Exit codes of `keywire mutate` (and `review` for unreadable input).
pub const EXIT_OK: i32 = 0;
pub const EXIT_DENIED: i32 = 1;
pub const EXIT_BAD_INPUT: i32 = 2;

/// An error on one line of stderr: line breaks become spaces, other control characters (which
/// input such as a manifest name can carry) are escaped.
fn one_line(s: impl std::fmt::Display) -> String {
    crate::core::echo::escape(&s.to_string().replace('\n', " ")).into_owned()
}

/// The text of a file or stdin, decoded as kubectl decodes manifests: a UTF-8 BOM dropped,
/// UTF-16 with a BOM decoded, bytes that are not UTF-8 replaced by U+FFFD.
fn read_input(path: Option<&Path>) -> Result<String, String> {
    let bytes = match path {
        None => read_stdin()?,
        Some(p) if p == Path::new("-") => read_stdin()?,
        Some(p) => std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
    };
    // Valid UTF-8 (the usual case) becomes the text in place: the input is held once.
    let bom = match crate::yaml::decode(&bytes) {
        std::borrow::Cow::Owned(text) => return Ok(text),
        std::borrow::Cow::Borrowed(text) => bytes.len() - text.len(),
    };
    let mut bytes = bytes;
    bytes.drain(..bom);
    String::from_utf8(bytes).map_err(|e| format!("cannot decode the input: {e}"))
}

/// A file or stdin (`-`) to read as a stream (the manifests reader decodes it as
/// [`read_input`] does).
fn open_input(path: &Path) -> Result<Box<dyn std::io::Read>, String> {
    if path == Path::new("-") {
        return Ok(Box::new(std::io::stdin()));
    }
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(cannot)?;
    if file.metadata().map_err(cannot)?.is_dir() {
        return Err(cannot(std::io::Error::from(
            std::io::ErrorKind::IsADirectory,
        )));
    }
    Ok(Box::new(file))
}

fn read_stdin() -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    Ok(bytes)
}

pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Webhook(args) => webhook::run(*args),
        Command::Review(args) => review::run(&args),
        Command::Mutate(args) => mutate::run(&args),
        Command::Certs(args) => certs::run(&args),
        Command::Controller(args) => controller::run(*args),
    }
}
