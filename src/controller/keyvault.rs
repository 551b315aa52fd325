//! Key Vault access behind one small trait, `KeyVault::fetch`: one object, read with the pod's own
//! identity, turned into the bytes of its file. `AzureKeyVault` implements it with Microsoft's
//! crates (`azure_security_keyvault_*` over `azure_identity`); tests that need a fault implement it
//! too, but the end-to-end proof runs the real chain.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azure_core::http::{ClientOptions, RetryOptions, StatusCode, Transport};
use azure_security_keyvault_certificates::{
    CertificateClient, CertificateClientOptions, models::CertificateClientGetCertificateOptions,
};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions, models::KeyClientGetKeyOptions};
use azure_security_keyvault_secrets::{
    SecretClient, SecretClientOptions, models::SecretClientGetSecretOptions,
};

use crate::controller::content::{self, ContentError, PublicJwk};
use crate::controller::desired::FetchIdentity;
use crate::controller::identity::Credentials;
use crate::controller::metrics::Metrics;
use crate::core::annotations::{KeyVaultObject, ObjectType};

/// One object to read, and with whose identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectRequest {
    pub namespace: String,
    pub vault: String,
    pub cloud_name: String,
    pub object: KeyVaultObject,
    pub identity: FetchIdentity,
}

impl ObjectRequest {
    /// The fan-in key: (vault, object, version, identity).
    pub fn cache_key(&self) -> String {
        format!(
            "{}|{}/{}@{}|{}",
            self.vault,
            self.object.object_type.as_str(),
            self.object.name,
            self.object.version.as_deref().unwrap_or("latest"),
            self.identity.key(&self.namespace)
        )
    }

    /// `TYPE/NAME[@VERSION]` for messages (never the value).
    pub fn describe(&self) -> String {
        match &self.object.version {
            Some(v) => format!(
                "{}/{}@{v}",
                self.object.object_type.as_str(),
                self.object.name
            ),
            None => format!("{}/{}", self.object.object_type.as_str(), self.object.name),
        }
    }
}

/// An object's file bytes and the version they came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub version: String,
}

impl std::fmt::Debug for Fetched {
    // The bytes are a secret: never in logs, panics or test output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .field("version", &self.version)
            .finish()
    }
}

/// Why an object could not be read. Messages name the vault, object and identity, never a value
/// or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error("Key Vault {vault} throttled the request (429); retrying after {}s", retry_after.as_secs())]
    Throttled {
        vault: String,
        retry_after: Duration,
    },
    #[error("{object} was not found in Key Vault {vault}")]
    NotFound { vault: String, object: String },
    #[error("Key Vault {vault} refused {identity} for {object} (HTTP {status}{code})")]
    Forbidden {
        vault: String,
        object: String,
        identity: String,
        status: u16,
        code: String,
    },
    #[error("no Entra token for {identity}: {reason}")]
    Credential { identity: String, reason: String },
    #[error("Key Vault {vault} is unavailable: {reason}")]
    Unavailable { vault: String, reason: String },
    #[error("{object} in Key Vault {vault}: {source}")]
    Content {
        vault: String,
        object: String,
        source: ContentError,
    },
    #[error("{0}")]
    Config(String),
}

impl VaultError {
    /// The Event reason: `ProviderError` when Key Vault itself failed (throttled, down), else
    /// `SyncFailed` (the identity, the object or the config is wrong).
    pub fn event_reason(&self) -> &'static str {
        match self {
            VaultError::Throttled { .. } | VaultError::Unavailable { .. } => "ProviderError",
            _ => "SyncFailed",
        }
    }

    /// A bounded label for metrics.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            VaultError::Throttled { .. } => "throttled",
            VaultError::NotFound { .. } => "not_found",
            VaultError::Forbidden { .. } => "forbidden",
            VaultError::Credential { .. } => "credential",
            VaultError::Unavailable { .. } => "unavailable",
            VaultError::Content { .. } => "content",
            VaultError::Config(_) => "config",
        }
    }

    /// How long to leave the vault alone, when it said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            VaultError::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

#[async_trait::async_trait]
pub trait KeyVault: Send + Sync + 'static {
    async fn fetch(&self, request: &ObjectRequest) -> Result<Fetched, VaultError>;
}

/// The Key Vault DNS suffix of an Azure cloud, as the CSI provider's `cloudName` names it.
pub fn dns_suffix(cloud_name: &str) -> Option<&'static str> {
    match cloud_name.to_ascii_lowercase().as_str() {
        "" | "azurepubliccloud" | "azurecloud" => Some("vault.azure.net"),
        "azureusgovernmentcloud" | "azureusgovernment" => Some("vault.usgovcloudapi.net"),
        "azurechinacloud" => Some("vault.azure.cn"),
        "azuregermancloud" => Some("vault.microsoftazure.de"),
        _ => None,
    }
}

/// What `AzureKeyVault` is configured with.
#[derive(Debug, Clone)]
pub struct AzureSettings {
    /// Vault URL per vault name, instead of `https://{vault}.{suffix}` (private endpoints,
    /// sovereign or test clouds). The challenge's resource is not checked against these hosts.
    pub endpoints: BTreeMap<String, String>,
    /// Overrides the suffix derived from the config's `cloudName`.
    pub dns_suffix: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Key Vault through Microsoft's crates. Clients are kept per (vault, identity), so the bearer
/// challenge is answered once per client, and tokens are cached by the credentials.
pub struct AzureKeyVault {
    settings: AzureSettings,
    transport: Transport,
    credentials: Arc<Credentials>,
    metrics: Arc<Metrics>,
    clients: Mutex<HashMap<String, Arc<Clients>>>,
}

struct Clients {
    secrets: SecretClient,
    certificates: CertificateClient,
    keys: KeyClient,
}

fn client_options(transport: &Transport) -> ClientOptions {
    ClientOptions {
        transport: Some(transport.clone()),
        // The controller retries by requeueing, honouring Retry-After itself.
        retry: RetryOptions::none(),
        ..ClientOptions::default()
    }
}

impl AzureKeyVault {
    pub fn new(
        settings: AzureSettings,
        transport: Transport,
        credentials: Arc<Credentials>,
        metrics: Arc<Metrics>,
    ) -> Self {
        AzureKeyVault {
            settings,
            transport,
            credentials,
            metrics,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn endpoint(&self, vault: &str, cloud_name: &str) -> Result<(String, bool), VaultError> {
        if let Some(url) = self.settings.endpoints.get(vault) {
            return Ok((url.clone(), false));
        }
        let suffix = match &self.settings.dns_suffix {
            Some(s) => s.clone(),
            None => dns_suffix(cloud_name)
                .ok_or_else(|| {
                    VaultError::Config(format!(
                        "cloudName {cloud_name:?} has no known Key Vault DNS suffix; set --keyvault-dns-suffix or --keyvault-endpoint {vault}=URL"
                    ))
                })?
                .to_string(),
        };
        Ok((format!("https://{vault}.{suffix}"), true))
    }

    async fn clients(&self, request: &ObjectRequest) -> Result<Arc<Clients>, VaultError> {
        let credential = self
            .credentials
            .for_identity(&request.namespace, &request.identity)
            .await?;
        let key = format!(
            "{}|{}|{}",
            request.vault,
            request.identity.key(&request.namespace),
            credential.version
        );
        if let Some(c) = self.clients.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(c);
        }
        let (endpoint, verify) = self.endpoint(&request.vault, &request.cloud_name)?;
        let config =
            |e: azure_core::Error| VaultError::Config(format!("Key Vault URL {endpoint}: {e}"));
        let clients = Arc::new(Clients {
            secrets: SecretClient::new(
                &endpoint,
                credential.credential.clone(),
                Some(SecretClientOptions {
                    client_options: client_options(&self.transport),
                    verify_challenge_resource: Some(verify),
                    ..SecretClientOptions::default()
                }),
            )
            .map_err(config)?,
            certificates: CertificateClient::new(
                &endpoint,
                credential.credential.clone(),
                Some(CertificateClientOptions {
                    client_options: client_options(&self.transport),
                    verify_challenge_resource: Some(verify),
                    ..CertificateClientOptions::default()
                }),
            )
            .map_err(config)?,
            keys: KeyClient::new(
                &endpoint,
                credential.credential.clone(),
                Some(KeyClientOptions {
                    client_options: client_options(&self.transport),
                    verify_challenge_resource: Some(verify),
                    ..KeyClientOptions::default()
                }),
            )
            .map_err(config)?,
        });
        if let Ok(mut m) = self.clients.lock() {
            // Old credential versions (a rotated service-principal Secret) drop out here.
            m.retain(|k, _| {
                !k.starts_with(&format!(
                    "{}|{}|",
                    request.vault,
                    request.identity.key(&request.namespace)
                ))
            });
            m.insert(key, clients.clone());
        }
        Ok(clients)
    }

    /// Maps an error of the Azure crates to what the controller acts on.
    fn classify(&self, request: &ObjectRequest, e: &azure_core::Error) -> VaultError {
        use azure_core::error::ErrorKind;
        let vault = request.vault.clone();
        let object = request.describe();
        match e.kind() {
            ErrorKind::HttpResponse {
                status,
                error_code,
                raw_response,
            } => {
                let code = error_code
                    .as_deref()
                    .map(|c| format!(", {c}"))
                    .unwrap_or_default();
                match *status {
                    StatusCode::TooManyRequests => VaultError::Throttled {
                        vault,
                        retry_after: raw_response
                            .as_ref()
                            .and_then(|r| {
                                r.headers()
                                    .get_optional_str(&azure_core::http::headers::RETRY_AFTER)
                                    .and_then(|v| v.trim().parse::<u64>().ok())
                            })
                            .map(Duration::from_secs)
                            .unwrap_or(Duration::from_secs(30)),
                    },
                    StatusCode::NotFound => VaultError::NotFound { vault, object },
                    StatusCode::Unauthorized | StatusCode::Forbidden => VaultError::Forbidden {
                        vault,
                        object,
                        identity: request.identity.key(&request.namespace),
                        status: u16::from(*status),
                        code,
                    },
                    s if u16::from(s) >= 500 => VaultError::Unavailable {
                        vault,
                        reason: format!("HTTP {}{code}", u16::from(s)),
                    },
                    s => VaultError::Forbidden {
                        vault,
                        object,
                        identity: request.identity.key(&request.namespace),
                        status: u16::from(s),
                        code,
                    },
                }
            }
            ErrorKind::Credential => VaultError::Credential {
                identity: request.identity.key(&request.namespace),
                reason: error_chain(e),
            },
            _ => VaultError::Unavailable {
                vault,
                reason: error_chain(e),
            },
        }
    }

    async fn read(
        &self,
        request: &ObjectRequest,
        clients: &Clients,
    ) -> Result<Fetched, VaultError> {
        let content = |source: ContentError| VaultError::Content {
            vault: request.vault.clone(),
            object: request.describe(),
            source,
        };
        let name = request.object.name.as_str();
        let version = request.object.version.clone();
        match request.object.object_type {
            ObjectType::Secret => {
                let secret = clients
                    .secrets
                    .get_secret(
                        name,
                        Some(SecretClientGetSecretOptions {
                            secret_version: version,
                            ..Default::default()
                        }),
                    )
                    .await
                    .and_then(|r| r.into_model())
                    .map_err(|e| self.classify(request, &e))?;
                let bytes = content::secret_bytes(
                    secret.value.as_deref().unwrap_or_default(),
                    secret.content_type.as_deref(),
                )
                .map_err(content)?;
                Ok(Fetched {
                    bytes,
                    version: version_of(secret.id.as_deref()),
                })
            }
            ObjectType::Cert => {
                let cert = clients
                    .certificates
                    .get_certificate(
                        name,
                        Some(CertificateClientGetCertificateOptions {
                            certificate_version: version,
                            ..Default::default()
                        }),
                    )
                    .await
                    .and_then(|r| r.into_model())
                    .map_err(|e| self.classify(request, &e))?;
                Ok(Fetched {
                    bytes: content::certificate_bytes(cert.cer.as_deref()).map_err(content)?,
                    version: version_of(cert.id.as_deref()),
                })
            }
            ObjectType::Key => {
                let key = clients
                    .keys
                    .get_key(
                        name,
                        Some(KeyClientGetKeyOptions {
                            key_version: version,
                            ..Default::default()
                        }),
                    )
                    .await
                    .and_then(|r| r.into_model())
                    .map_err(|e| self.classify(request, &e))?;
                let jwk = key
                    .key
                    .ok_or_else(|| content(ContentError::KeyField("key")))?;
                let public = PublicJwk {
                    kty: enum_text(jwk.kty.as_ref()).unwrap_or_default(),
                    crv: enum_text(jwk.crv.as_ref()),
                    n: jwk.n,
                    e: jwk.e,
                    x: jwk.x,
                    y: jwk.y,
                };
                Ok(Fetched {
                    bytes: content::public_key_bytes(&public).map_err(content)?,
                    version: version_of(jwk.kid.as_deref()),
                })
            }
        }
    }
}

/// A generated string enum (key type, curve) as its wire text.
fn enum_text<T: serde::Serialize>(v: Option<&T>) -> Option<String> {
    serde_json::to_value(v?)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
}

/// The last path segment of a Key Vault id (`…/secrets/NAME/VERSION`).
fn version_of(id: Option<&str>) -> String {
    id.and_then(|i| i.trim_end_matches('/').rsplit('/').next())
        .unwrap_or_default()
        .to_string()
}

/// `Display` of an error and its sources, one line (the Azure crates' `Debug` is huge).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out.replace('\n', " ")
}

#[async_trait::async_trait]
impl KeyVault for AzureKeyVault {
    async fn fetch(&self, request: &ObjectRequest) -> Result<Fetched, VaultError> {
        let clients = self.clients(request).await?;
        let started = Instant::now();
        let result = self.read(request, &clients).await;
        let status = match &result {
            Ok(_) => "ok",
            Err(e) => e.metric_reason(),
        };
        self.metrics.keyvault_request(
            content::object_type_label(request.object.object_type),
            status,
            started.elapsed(),
        );
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clouds_have_their_vault_suffix() {
        assert_eq!(dns_suffix("AzurePublicCloud"), Some("vault.azure.net"));
        assert_eq!(dns_suffix(""), Some("vault.azure.net"));
        assert_eq!(dns_suffix("AzureChinaCloud"), Some("vault.azure.cn"));
        assert_eq!(
            dns_suffix("AzureUSGovernmentCloud"),
            Some("vault.usgovcloudapi.net")
        );
        assert_eq!(dns_suffix("MyStack"), None);
    }

    #[test]
    fn versions_come_from_the_id() {
        assert_eq!(
            version_of(Some("https://kv.vault.azure.net/secrets/db/0123abcd")),
            "0123abcd"
        );
        assert_eq!(version_of(None), "");
    }

    #[test]
    fn fetched_values_never_print() {
        let f = Fetched {
            bytes: b"hunter2".to_vec(),
            version: "v1".into(),
        };
        let shown = format!("{f:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("<7 bytes>"),
            "{shown}"
        );
    }

    #[test]
    fn errors_say_which_event_and_when_to_retry() {
        let t = VaultError::Throttled {
            vault: "kv".into(),
            retry_after: Duration::from_secs(7),
        };
        assert_eq!(t.event_reason(), "ProviderError");
        assert_eq!(t.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(
            t.to_string(),
            "Key Vault kv throttled the request (429); retrying after 7s"
        );
        let c = VaultError::Credential {
            identity: "workload:t/c@ns/sa".into(),
            reason: "invalid_client".into(),
        };
        assert_eq!(c.event_reason(), "SyncFailed");
        assert_eq!(c.retry_after(), None);
    }
}
