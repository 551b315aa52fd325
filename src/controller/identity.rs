//! The pod's own identity, as an Entra credential for Key Vault: a TokenRequest for its
//! ServiceAccount exchanged as a client assertion (workload identity), the `clientid` and
//! `clientsecret` of its namespace's credentials Secret (service principal), or the node's
//! managed identity (IMDS). Credentials are kept per identity, so their token caches work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientMethodOptions, ClientOptions, Transport};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId,
};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Api;
use kube::api::PostParams;

use crate::controller::desired::FetchIdentity;
use crate::controller::keyvault::{VaultError, error_chain};

/// Keys of the service-principal credentials Secret, as the CSI driver's nodePublishSecretRef.
pub const CLIENT_ID_KEY: &str = "clientid";
pub const CLIENT_SECRET_KEY: &str = "clientsecret";

/// How the controller reaches Entra.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// Entra's authority host, e.g. `https://login.microsoftonline.com/`.
    pub authority_host: String,
    /// Audience of the ServiceAccount tokens (Azure's `api://AzureADTokenExchange`; sovereign
    /// clouds use others).
    pub token_audience: String,
    /// Lifetime asked of each TokenRequest (the API server's minimum is 600 s).
    pub token_seconds: i64,
}

/// A credential and what it was made from (a Secret's resourceVersion), so clients holding an
/// old one are replaced.
#[derive(Clone)]
pub struct VersionedCredential {
    pub credential: Arc<dyn TokenCredential>,
    pub version: String,
}

pub struct Credentials {
    client: kube::Client,
    settings: IdentitySettings,
    transport: Transport,
    cache: Mutex<HashMap<String, VersionedCredential>>,
}

/// The assertion of workload identity: a fresh, short-lived ServiceAccount token from the API
/// server, asked for only when Entra needs one (the credential caches its access tokens).
struct ServiceAccountAssertion {
    api: Api<ServiceAccount>,
    namespace: String,
    name: String,
    audience: String,
    seconds: i64,
}

impl std::fmt::Debug for ServiceAccountAssertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ServiceAccountAssertion({}/{})",
            self.namespace, self.name
        )
    }
}

#[async_trait::async_trait]
impl ClientAssertion for ServiceAccountAssertion {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![self.audience.clone()],
                expiration_seconds: Some(self.seconds),
                bound_object_ref: None,
            },
            ..TokenRequest::default()
        };
        let answer = self
            .api
            .create_token_request(&self.name, &PostParams::default(), &request)
            .await
            .map_err(|e| {
                azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    format!(
                        "TokenRequest for ServiceAccount {}/{}: {}",
                        self.namespace,
                        self.name,
                        error_chain(&e)
                    ),
                )
            })?;
        answer.status.map(|s| s.token).ok_or_else(|| {
            azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                format!(
                    "TokenRequest for ServiceAccount {}/{} returned no token",
                    self.namespace, self.name
                ),
            )
        })
    }
}

impl Credentials {
    pub fn new(client: kube::Client, settings: IdentitySettings, transport: Transport) -> Self {
        Credentials {
            client,
            settings,
            transport,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn options(&self) -> ClientOptions {
        let mut custom = CustomConfiguration::default();
        custom.authority_host = self.settings.authority_host.clone();
        ClientOptions {
            transport: Some(self.transport.clone()),
            cloud: Some(Arc::new(CloudConfiguration::from(custom))),
            retry: azure_core::http::RetryOptions::none(),
            ..ClientOptions::default()
        }
    }

    fn cached(&self, key: &str, version: &str) -> Option<VersionedCredential> {
        let cache = self.cache.lock().ok()?;
        cache.get(key).filter(|c| c.version == version).cloned()
    }

    fn remember(&self, key: String, credential: VersionedCredential) -> VersionedCredential {
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key, credential.clone());
        }
        credential
    }

    /// The credential for `identity` in `namespace`.
    pub async fn for_identity(
        &self,
        namespace: &str,
        identity: &FetchIdentity,
    ) -> Result<VersionedCredential, VaultError> {
        let key = identity.key(namespace);
        let failed = |reason: String| VaultError::Credential {
            identity: key.clone(),
            reason,
        };
        match identity {
            FetchIdentity::Workload {
                tenant_id,
                client_id,
                service_account,
            } => {
                if let Some(c) = self.cached(&key, "") {
                    return Ok(c);
                }
                let assertion = ServiceAccountAssertion {
                    api: Api::namespaced(self.client.clone(), namespace),
                    namespace: namespace.to_string(),
                    name: service_account.clone(),
                    audience: self.settings.token_audience.clone(),
                    seconds: self.settings.token_seconds,
                };
                let credential = ClientAssertionCredential::new(
                    tenant_id.clone(),
                    client_id.clone(),
                    assertion,
                    Some(ClientAssertionCredentialOptions {
                        client_options: self.options(),
                    }),
                )
                .map_err(|e| failed(error_chain(&e)))?;
                Ok(self.remember(
                    key.clone(),
                    VersionedCredential {
                        credential,
                        version: String::new(),
                    },
                ))
            }
            FetchIdentity::ServicePrincipal {
                tenant_id,
                credentials_secret,
            } => {
                let secret = Api::<Secret>::namespaced(self.client.clone(), namespace)
                    .get_opt(credentials_secret)
                    .await
                    .map_err(|e| {
                        failed(format!(
                            "cannot read Secret {namespace}/{credentials_secret}: {}",
                            error_chain(&e)
                        ))
                    })?
                    .ok_or_else(|| {
                        failed(format!(
                            "Secret {namespace}/{credentials_secret} not found (it needs keys {CLIENT_ID_KEY} and {CLIENT_SECRET_KEY})"
                        ))
                    })?;
                let version = secret.metadata.resource_version.clone().unwrap_or_default();
                if let Some(c) = self.cached(&key, &version) {
                    return Ok(c);
                }
                let field = |k: &str| -> Result<String, VaultError> {
                    secret
                        .data
                        .as_ref()
                        .and_then(|d| d.get(k))
                        .and_then(|v| String::from_utf8(v.0.clone()).ok())
                        .map(|v| v.trim().to_string())
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| {
                            failed(format!(
                                "Secret {namespace}/{credentials_secret} has no key {k}"
                            ))
                        })
                };
                let credential = ClientSecretCredential::new(
                    tenant_id,
                    field(CLIENT_ID_KEY)?,
                    azure_core::credentials::Secret::new(field(CLIENT_SECRET_KEY)?),
                    Some(ClientSecretCredentialOptions {
                        client_options: self.options(),
                    }),
                )
                .map_err(|e| failed(error_chain(&e)))?;
                Ok(self.remember(
                    key.clone(),
                    VersionedCredential {
                        credential,
                        version,
                    },
                ))
            }
            FetchIdentity::ManagedIdentity { client_id } => {
                if let Some(c) = self.cached(&key, "") {
                    return Ok(c);
                }
                let credential =
                    ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                        user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                        client_options: ClientOptions {
                            transport: Some(self.transport.clone()),
                            ..ClientOptions::default()
                        },
                    }))
                    .map_err(|e| failed(error_chain(&e)))?;
                Ok(self.remember(
                    key.clone(),
                    VersionedCredential {
                        credential,
                        version: String::new(),
                    },
                ))
            }
        }
    }
}
