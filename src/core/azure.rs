//! The Azure Workload Identity webhook's wiring, as upstream v1.6.0 writes it (and v1.5's, behind
//! one setting): the projected token volume and its mount, the `AZURE_*` environment, the custom
//! token endpoint (AKS identity bindings) and the proxy sidecar. keywire's own workload-identity
//! wiring uses the same layout, so a pod never carries two.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The audience Azure's token exchange expects.
pub const DEFAULT_AUDIENCE: &str = "api://AzureADTokenExchange";
/// v1.6: token volumes are named this, then 30 hex characters of sha256 of the pod's name.
pub const RESERVED_VOLUME_PREFIX: &str = "azure-workload-identity-reserved-";
const V16_MOUNT_PATH: &str = "/var/run/secrets/azure/wi";
const V16_TOKEN_PATH: &str = "token/azure-identity-token";
/// Where the custom token endpoint's CA is projected, inside the token volume.
pub const CA_PATH: &str = "ca-cert/ca.crt";
const V15_VOLUME: &str = "azure-identity-token";
const V15_MOUNT_PATH: &str = "/var/run/secrets/azure/tokens";
const V15_TOKEN_PATH: &str = "azure-identity-token";

pub const PROXY_INIT_CONTAINER: &str = "azwi-proxy-init";
pub const PROXY_CONTAINER: &str = "azwi-proxy";
pub const DEFAULT_PROXY_PORT: i32 = 8000;
pub const DEFAULT_PROXY_IMAGE: &str = "mcr.microsoft.com/oss/azure/workload-identity/proxy:v1.6.0";
pub const DEFAULT_PROXY_INIT_IMAGE: &str =
    "mcr.microsoft.com/oss/azure/workload-identity/proxy-init:v1.6.0";

/// Where the token is projected: upstream v1.6.0 (the default) or v1.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// `azure-workload-identity-reserved-<hash>` at `/var/run/secrets/azure/wi`,
    /// token at `token/azure-identity-token`.
    #[default]
    V16,
    /// `azure-identity-token` at `/var/run/secrets/azure/tokens`, for images that hard-code
    /// `/var/run/secrets/azure/tokens/azure-identity-token`.
    V15,
}

impl Layout {
    pub fn parse(value: &str) -> Option<Layout> {
        match value {
            "v1.6" => Some(Layout::V16),
            "v1.5" => Some(Layout::V15),
            _ => None,
        }
    }

    pub fn mount_path(self) -> &'static str {
        match self {
            Layout::V16 => V16_MOUNT_PATH,
            Layout::V15 => V15_MOUNT_PATH,
        }
    }

    fn token_path(self) -> &'static str {
        match self {
            Layout::V16 => V16_TOKEN_PATH,
            Layout::V15 => V15_TOKEN_PATH,
        }
    }

    /// `AZURE_FEDERATED_TOKEN_FILE`.
    pub fn token_file(self) -> String {
        format!("{}/{}", self.mount_path(), self.token_path())
    }

    /// The token volume's name for a pod named `pod_name` (`generateName + " (prefix)"` for a
    /// pod that has only a generateName, as upstream hashes it).
    pub fn volume_name(self, pod_name: &str) -> String {
        match self {
            Layout::V15 => V15_VOLUME.to_string(),
            Layout::V16 => {
                let digest = Sha256::digest(pod_name.as_bytes());
                let hex = hex(&digest);
                format!(
                    "{RESERVED_VOLUME_PREFIX}{}",
                    &hex[..63 - RESERVED_VOLUME_PREFIX.len()]
                )
            }
        }
    }

    /// Whether an existing volume is a token volume of this layout (any pod's, for v1.6), so a
    /// pod made from a template keywire already wired keeps one token volume.
    pub fn is_token_volume(self, volume: &Value) -> bool {
        let name = volume["name"].as_str().unwrap_or_default();
        let named = match self {
            Layout::V16 => name.starts_with(RESERVED_VOLUME_PREFIX),
            Layout::V15 => name == V15_VOLUME,
        };
        named
            && volume["projected"]["sources"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|src| src["serviceAccountToken"]["path"] == self.token_path())
            })
    }
}

/// Where the custom token endpoint's CA comes from (at most one).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CaSource {
    #[default]
    None,
    /// `AZURE_KUBERNETES_CA_DATA`, passed in the environment.
    Data(String),
    /// Key `ca.crt` of this ConfigMap, projected into the token volume.
    ConfigMap(String),
    /// A ClusterTrustBundle projection: signer name, and a label selector (JSON) or none.
    ClusterTrustBundle {
        signer_name: String,
        label_selector: Option<Value>,
    },
}

/// AKS identity bindings: pods annotated `azure.workload.identity/use-<suffix>: "true"` get a
/// token for `audience` and the proxy's coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomTokenEndpoint {
    pub annotation_suffix: String,
    pub audience: String,
    pub token_proxy: Option<String>,
    pub sni_name: Option<String>,
    pub ca: CaSource,
}

impl CustomTokenEndpoint {
    /// The pod annotation that asks for it.
    pub fn annotation(&self) -> String {
        format!("azure.workload.identity/use-{}", self.annotation_suffix)
    }
}

/// The proxy sidecar's images and the log level it is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    pub image: String,
    pub init_image: String,
    pub log_level: String,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            image: DEFAULT_PROXY_IMAGE.to_string(),
            init_image: DEFAULT_PROXY_INIT_IMAGE.to_string(),
            log_level: "info".to_string(),
        }
    }
}

/// Cluster settings of the workload-identity wiring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub layout: Layout,
    /// The token audience (`--audience` upstream).
    pub audience: String,
    pub custom_token_endpoint: Option<CustomTokenEndpoint>,
    pub proxy: ProxySettings,
    /// The API server is 1.32 or newer: the proxy is a native sidecar (an init container with
    /// `restartPolicy: Always`), else the first regular container.
    pub native_sidecars: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            layout: Layout::V16,
            audience: DEFAULT_AUDIENCE.to_string(),
            custom_token_endpoint: None,
            proxy: ProxySettings::default(),
            native_sidecars: true,
        }
    }
}

/// Whether a Kubernetes version (`1.35`, `v1.35.4`) has native sidecars (1.32 and later).
/// Pre-releases of 1.32 do not count, as upstream's semantic comparison has it.
pub fn has_native_sidecars(version: &str) -> Option<bool> {
    let v = version.trim().trim_start_matches('v');
    let (core, pre) = match v.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (v, None),
    };
    let mut parts = core.split('.');
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    let patch: u32 = parts.next().map(str::parse).transpose().ok()?.unwrap_or(0);
    Some(match (major, minor) {
        (1, m) if m > 32 => true,
        (1, 32) => patch > 0 || pre.is_none(),
        (m, _) => m > 1,
    })
}

/// The projected token volume.
pub fn token_volume(
    name: &str,
    layout: Layout,
    audience: &str,
    expiration: i64,
    ca: &CaSource,
) -> Value {
    let mut sources = vec![json!({"serviceAccountToken": {
        "audience": audience,
        "expirationSeconds": expiration,
        "path": layout.token_path(),
    }})];
    match ca {
        CaSource::ConfigMap(config_map) => sources.push(json!({"configMap": {
            "name": config_map,
            "items": [{"key": "ca.crt", "path": CA_PATH}],
            "optional": false,
        }})),
        CaSource::ClusterTrustBundle {
            signer_name,
            label_selector,
        } => {
            let mut bundle = json!({"signerName": signer_name, "path": CA_PATH, "optional": false});
            if let Some(selector) = label_selector {
                bundle["labelSelector"] = selector.clone();
            }
            sources.push(json!({"clusterTrustBundle": bundle}));
        }
        CaSource::None | CaSource::Data(_) => {}
    }
    json!({"name": name, "projected": {"sources": sources}})
}

/// The names of the identity environment, in the order they are added.
pub const IDENTITY_ENV: [&str; 4] = [
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
];

/// The identity environment, each variable only when it has a value; with the custom token
/// endpoint's four after them.
pub fn identity_env(
    client_id: Option<&str>,
    tenant_id: Option<&str>,
    layout: Layout,
    authority: &str,
    endpoint: Option<&CustomTokenEndpoint>,
) -> Vec<Value> {
    let token_file = layout.token_file();
    let mut pairs: Vec<(&str, Option<String>)> = IDENTITY_ENV
        .into_iter()
        .zip([
            client_id.map(str::to_string),
            tenant_id.map(str::to_string),
            Some(token_file),
            Some(authority.to_string()),
        ])
        .collect();
    if let Some(e) = endpoint {
        pairs.push(("AZURE_KUBERNETES_TOKEN_PROXY", e.token_proxy.clone()));
        pairs.push(("AZURE_KUBERNETES_SNI_NAME", e.sni_name.clone()));
        pairs.push((
            "AZURE_KUBERNETES_CA_FILE",
            Some(format!("{}/{CA_PATH}", layout.mount_path())),
        ));
        pairs.push((
            "AZURE_KUBERNETES_CA_DATA",
            match &e.ca {
                CaSource::Data(d) => Some(d.clone()),
                _ => None,
            },
        ));
    }
    pairs
        .into_iter()
        .filter_map(|(name, value)| {
            let value = value.filter(|v| !v.is_empty())?;
            Some(json!({"name": name, "value": value}))
        })
        .collect()
}

/// `azwi-proxy-init`: redirects the pod's IMDS traffic to the proxy (needs NET_ADMIN, root).
pub fn proxy_init_container(proxy: &ProxySettings, port: i32) -> Value {
    json!({
        "name": PROXY_INIT_CONTAINER,
        "image": proxy.init_image,
        "imagePullPolicy": "IfNotPresent",
        "securityContext": {
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
            "privileged": true,
            "runAsNonRoot": false,
            "runAsUser": 0,
        },
        "env": [{"name": "PROXY_PORT", "value": port.to_string()}],
    })
}

/// `azwi-proxy`: answers IMDS token requests with the workload identity.
pub fn proxy_container(proxy: &ProxySettings, port: i32, native: bool) -> Value {
    let port_arg = format!("--proxy-port={port}");
    let log_arg = format!("--log-level={}", proxy.log_level);
    let mut c = json!({
        "name": PROXY_CONTAINER,
        "image": proxy.image,
        "imagePullPolicy": "IfNotPresent",
        "args": [port_arg, log_arg],
        "ports": [{"containerPort": port}],
        "lifecycle": {"postStart": {"exec": {"command": ["/proxy", port_arg, "--probe", log_arg]}}},
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "privileged": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
        },
    });
    if native {
        c["restartPolicy"] = json!("Always");
    }
    c
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v16_volume_names_hash_the_pod_name_to_63_characters() {
        // Upstream's own examples (pkg/webhook/webhook.go buildVolumeName).
        assert_eq!(
            Layout::V16.volume_name("pod"),
            "azure-workload-identity-reserved-425c89ed5bb78a7623fae60fd8a6f6"
        );
        assert_eq!(
            Layout::V16.volume_name("pod- (prefix)"),
            "azure-workload-identity-reserved-fd2a7d7119bc6c25bcfb98ce4a1924"
        );
        assert_eq!(Layout::V16.volume_name("x").len(), 63);
        assert_eq!(Layout::V15.volume_name("anything"), "azure-identity-token");
        assert_eq!(
            Layout::V16.token_file(),
            "/var/run/secrets/azure/wi/token/azure-identity-token"
        );
        assert_eq!(
            Layout::V15.token_file(),
            "/var/run/secrets/azure/tokens/azure-identity-token"
        );
    }

    #[test]
    fn native_sidecars_from_132_without_prereleases() {
        for (v, want) in [
            ("1.35", Some(true)),
            ("v1.32.0", Some(true)),
            ("v1.32.0-alpha.1", Some(false)),
            ("v1.32.1-rc.0", Some(true)),
            ("1.31.9", Some(false)),
            ("2.0", Some(true)),
            ("banana", None),
        ] {
            assert_eq!(has_native_sidecars(v), want, "{v}");
        }
    }

    #[test]
    fn env_skips_empty_values_and_adds_the_endpoints_after() {
        let e = CustomTokenEndpoint {
            annotation_suffix: "identity-binding".into(),
            audience: "api://AKSIdentityBinding".into(),
            token_proxy: Some("https://kubernetes.default.svc".into()),
            sni_name: None,
            ca: CaSource::Data("PEM".into()),
        };
        let names: Vec<String> = identity_env(None, Some(""), Layout::V16, "https://a/", Some(&e))
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            vec![
                "AZURE_FEDERATED_TOKEN_FILE",
                "AZURE_AUTHORITY_HOST",
                "AZURE_KUBERNETES_TOKEN_PROXY",
                "AZURE_KUBERNETES_CA_FILE",
                "AZURE_KUBERNETES_CA_DATA"
            ]
        );
    }
}
