//! The annotation contract: keys, and parsing a pod's labels and annotations into an `InjectionRequest`.
//!
//! This module checks syntax only (one annotation at a time). Anything that needs the
//! ServiceAccount, the namespace or the pod spec is resolved in `plan`.

use std::collections::BTreeMap;
use std::fmt;

/// Opt-in label. A label, so the webhook's `objectSelector` keeps other pods away.
pub const INJECT_LABEL: &str = "keywire.dev/inject";
pub const SECRET_PROVIDER_CLASS: &str = "keywire.dev/secret-provider-class";
pub const KEYVAULT: &str = "keywire.dev/keyvault";
pub const TENANT_ID: &str = "keywire.dev/tenant-id";
pub const OBJECTS: &str = "keywire.dev/objects";
pub const MOUNT_PATH: &str = "keywire.dev/mount-path";
pub const IDENTITY: &str = "keywire.dev/identity";
pub const CLIENT_ID: &str = "keywire.dev/client-id";
pub const CREDENTIALS_SECRET: &str = "keywire.dev/credentials-secret";
pub const ENV: &str = "keywire.dev/env";
pub const SYNC_SECRET: &str = "keywire.dev/sync-secret";
pub const CONTAINERS: &str = "keywire.dev/containers";
pub const INIT_CONTAINERS: &str = "keywire.dev/init-containers";
pub const TOKEN_EXPIRATION: &str = "keywire.dev/token-expiration";
pub const STATUS: &str = "keywire.dev/status";
pub const STATUS_INJECTED: &str = "injected";
/// Controller-only: stamp the owning workload when a synced value changes.
pub const RESTART_ON_ROTATION: &str = "keywire.dev/restart-on-rotation";

const KNOWN: &[&str] = &[
    SECRET_PROVIDER_CLASS,
    KEYVAULT,
    TENANT_ID,
    OBJECTS,
    MOUNT_PATH,
    IDENTITY,
    CLIENT_ID,
    CREDENTIALS_SECRET,
    ENV,
    SYNC_SECRET,
    CONTAINERS,
    INIT_CONTAINERS,
    TOKEN_EXPIRATION,
    STATUS,
    RESTART_ON_ROTATION,
];

/// Azure Workload Identity webhook contract (the drop-in).
pub mod azure {
    pub const USE_LABEL: &str = "azure.workload.identity/use";
    pub const CLIENT_ID: &str = "azure.workload.identity/client-id";
    pub const TENANT_ID: &str = "azure.workload.identity/tenant-id";
    pub const TOKEN_EXPIRATION: &str = "azure.workload.identity/service-account-token-expiration";
    pub const SKIP_CONTAINERS: &str = "azure.workload.identity/skip-containers";
    /// Present (whatever its value): inject the IMDS proxy sidecar.
    pub const INJECT_PROXY_SIDECAR: &str = "azure.workload.identity/inject-proxy-sidecar";
    pub const PROXY_SIDECAR_PORT: &str = "azure.workload.identity/proxy-sidecar-port";
    /// `use-<suffix>: "true"` asks for the custom token endpoint the operator configured.
    pub const USE_PREFIX: &str = "azure.workload.identity/use-";
}

pub const DEFAULT_MOUNT_PATH: &str = "/mnt/secrets-store";
pub const DEFAULT_CREDENTIALS_SECRET: &str = "secrets-store-creds";
pub const MIN_TOKEN_EXPIRATION: i64 = 3600;
pub const MAX_TOKEN_EXPIRATION: i64 = 86400;
pub const DEFAULT_TOKEN_EXPIRATION: i64 = 3600;

/// A malformed annotation: names the key, the value and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key}={value:?} is invalid: {expected}")]
pub struct Malformed {
    pub key: String,
    pub value: String,
    pub expected: String,
}

impl Malformed {
    pub fn new(key: &str, value: &str, expected: impl Into<String>) -> Self {
        Malformed {
            key: key.to_string(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

/// How the pod (and the controller on its behalf) authenticates to Key Vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IdentityMode {
    Workload,
    ServicePrincipal,
    ManagedIdentity,
    PodIdentity,
}

impl IdentityMode {
    pub const ALL: [IdentityMode; 4] = [
        IdentityMode::Workload,
        IdentityMode::ServicePrincipal,
        IdentityMode::ManagedIdentity,
        IdentityMode::PodIdentity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IdentityMode::Workload => "workload",
            IdentityMode::ServicePrincipal => "service-principal",
            IdentityMode::ManagedIdentity => "managed-identity",
            IdentityMode::PodIdentity => "pod-identity",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == value)
    }
}

impl fmt::Display for IdentityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Key Vault object types, as the CSI Azure provider names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectType {
    Secret,
    Key,
    Cert,
}

impl ObjectType {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::Secret => "secret",
            ObjectType::Key => "key",
            ObjectType::Cert => "cert",
        }
    }
}

/// One `TYPE/NAME[@VERSION][ as ALIAS]` entry of `keywire.dev/objects`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyVaultObject {
    pub object_type: ObjectType,
    pub name: String,
    pub version: Option<String>,
    pub alias: Option<String>,
}

impl KeyVaultObject {
    /// The file name in the mount, and the key in the synced Secret.
    pub fn file_name(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }
}

/// One `ENV_NAME=OBJECT` entry of `keywire.dev/env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvBinding {
    pub env_name: String,
    pub object: String,
}

/// Where the SecretProviderClass comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `keywire.dev/secret-provider-class`: an SPC the user manages.
    Existing(String),
    /// `keywire.dev/keyvault` + `keywire.dev/objects`: the controller materialises the SPC.
    Inline {
        keyvault: String,
        objects: Vec<KeyVaultObject>,
    },
}

/// Everything a keywire-opted-in pod asked for, syntax-checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectionRequest {
    pub source: Source,
    pub tenant_id: Option<String>,
    pub mount_path: Option<String>,
    pub identity: Option<IdentityMode>,
    pub client_id: Option<String>,
    pub credentials_secret: Option<String>,
    pub env: Vec<EnvBinding>,
    pub sync_secret: Option<String>,
    pub containers: Option<Vec<String>>,
    pub init_containers: Option<Vec<String>>,
    pub token_expiration: Option<i64>,
}

/// What the Azure Workload Identity drop-in reads from the pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AzureWorkloadIdentityRequest {
    pub token_expiration: Option<i64>,
    pub skip_containers: Vec<String>,
    /// `inject-proxy-sidecar` is present: the proxy's port.
    pub proxy_port: Option<i32>,
    /// `inject-proxy-sidecar`'s value when it is not "true" (the sidecar is injected anyway).
    pub proxy_value: Option<String>,
}

pub type Annotations = BTreeMap<String, String>;

/// `metadata.labels` or `metadata.annotations` of an object's `metadata`, string values only.
pub fn string_map(metadata: Option<&serde_json::Value>, field: &str) -> BTreeMap<String, String> {
    metadata
        .and_then(|m| m.get(field))
        .and_then(serde_json::Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_opted_in(labels: &BTreeMap<String, String>) -> bool {
    labels.get(INJECT_LABEL).map(String::as_str) == Some("true")
}

pub fn uses_azure_workload_identity(labels: &BTreeMap<String, String>) -> bool {
    labels.get(azure::USE_LABEL).map(String::as_str) == Some("true")
}

/// `keywire.dev/*` keys that are not part of the contract (likely typos).
pub fn unknown_keys(annotations: &Annotations) -> Vec<&str> {
    annotations
        .keys()
        .filter(|k| k.starts_with("keywire.dev/") && !KNOWN.contains(&k.as_str()))
        .map(String::as_str)
        .collect()
}

pub fn parse(annotations: &Annotations) -> Result<InjectionRequest, Malformed> {
    let get = |key: &'static str| annotations.get(key).map(|v| (key, v.as_str()));

    let source = match (get(SECRET_PROVIDER_CLASS), get(KEYVAULT)) {
        (Some((key, spc)), None) => {
            if let Some((okey, oval)) = get(OBJECTS) {
                return Err(Malformed::new(
                    okey,
                    oval,
                    format!(
                        "no objects with {key}; objects are listed in that SecretProviderClass"
                    ),
                ));
            }
            Source::Existing(dns_subdomain(key, spc)?.to_string())
        }
        (None, Some((key, kv))) => {
            let objects = match get(OBJECTS) {
                Some((okey, oval)) => parse_objects(okey, oval)?,
                None => {
                    return Err(Malformed::new(
                        OBJECTS,
                        "",
                        format!("a comma list of TYPE/NAME[@VERSION][ as ALIAS] when {key} is set"),
                    ));
                }
            };
            Source::Inline {
                keyvault: keyvault_name(key, kv)?,
                objects,
            }
        }
        (Some((key, spc)), Some((kv_key, _))) => {
            return Err(Malformed::new(
                key,
                spc,
                format!("either {key} or {kv_key}, not both"),
            ));
        }
        (None, None) => {
            return Err(Malformed::new(
                KEYVAULT,
                "",
                format!(
                    "a Key Vault name (or {SECRET_PROVIDER_CLASS}) on pods labelled {INJECT_LABEL}=true"
                ),
            ));
        }
    };

    let identity = get(IDENTITY)
        .map(|(key, v)| {
            IdentityMode::parse(v).ok_or_else(|| {
                Malformed::new(
                    key,
                    v,
                    "one of workload, service-principal, managed-identity, pod-identity",
                )
            })
        })
        .transpose()?;

    let env = get(ENV)
        .map(|(key, v)| parse_env(key, v))
        .transpose()?
        .unwrap_or_default();

    if let Source::Inline { objects, .. } = &source {
        for binding in &env {
            if !objects.iter().any(|o| o.file_name() == binding.object) {
                let known: Vec<&str> = objects.iter().map(KeyVaultObject::file_name).collect();
                return Err(Malformed::new(
                    ENV,
                    annotations.get(ENV).map(String::as_str).unwrap_or_default(),
                    format!(
                        "{}={} to name an object of {OBJECTS} (one of: {})",
                        binding.env_name,
                        binding.object,
                        known.join(", ")
                    ),
                ));
            }
        }
    }

    Ok(InjectionRequest {
        source,
        tenant_id: get(TENANT_ID).map(|(k, v)| tenant_id(k, v)).transpose()?,
        mount_path: get(MOUNT_PATH).map(|(k, v)| mount_path(k, v)).transpose()?,
        identity,
        client_id: get(CLIENT_ID).map(|(k, v)| client_id(k, v)).transpose()?,
        credentials_secret: get(CREDENTIALS_SECRET)
            .map(|(k, v)| dns_subdomain(k, v).map(str::to_string))
            .transpose()?,
        env,
        sync_secret: get(SYNC_SECRET)
            .map(|(k, v)| dns_subdomain(k, v).map(str::to_string))
            .transpose()?,
        containers: get(CONTAINERS)
            .map(|(k, v)| name_list(k, v, ','))
            .transpose()?,
        init_containers: get(INIT_CONTAINERS)
            .map(|(k, v)| name_list(k, v, ','))
            .transpose()?,
        token_expiration: get(TOKEN_EXPIRATION)
            .map(|(k, v)| token_expiration(k, v))
            .transpose()?,
    })
}

pub fn parse_azure(annotations: &Annotations) -> Result<AzureWorkloadIdentityRequest, Malformed> {
    let proxy = annotations.get(azure::INJECT_PROXY_SIDECAR);
    let proxy_port = match (proxy, annotations.get(azure::PROXY_SIDECAR_PORT)) {
        (None, _) => None,
        (Some(_), None) => Some(crate::core::azure::DEFAULT_PROXY_PORT),
        (Some(_), Some(v)) => match v.parse::<i32>() {
            Ok(p) if (1..=65535).contains(&p) => Some(p),
            _ => {
                return Err(Malformed::new(
                    azure::PROXY_SIDECAR_PORT,
                    v,
                    "a port number from 1 to 65535",
                ));
            }
        },
    };
    Ok(AzureWorkloadIdentityRequest {
        // Upstream treats an empty expiration like a missing one.
        token_expiration: annotations
            .get(azure::TOKEN_EXPIRATION)
            .filter(|v| !v.is_empty())
            .map(|v| token_expiration(azure::TOKEN_EXPIRATION, v))
            .transpose()?,
        proxy_port,
        proxy_value: proxy.filter(|v| v.as_str() != "true").cloned(),
        skip_containers: annotations
            .get(azure::SKIP_CONTAINERS)
            .map(|v| {
                v.split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    })
}

pub fn token_expiration(key: &str, value: &str) -> Result<i64, Malformed> {
    match value.trim().parse::<i64>() {
        Ok(n) if (MIN_TOKEN_EXPIRATION..=MAX_TOKEN_EXPIRATION).contains(&n) => Ok(n),
        _ => Err(Malformed::new(
            key,
            value,
            format!("whole seconds from {MIN_TOKEN_EXPIRATION} to {MAX_TOKEN_EXPIRATION}"),
        )),
    }
}

fn parse_objects(key: &str, value: &str) -> Result<Vec<KeyVaultObject>, Malformed> {
    const EXPECTED: &str =
        "a comma list of TYPE/NAME[@VERSION][ as ALIAS], TYPE one of secret, key, cert";
    let mut objects: Vec<KeyVaultObject> = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        let bad = |why: &str| Malformed::new(key, value, format!("{EXPECTED} ({why})"));
        if item.is_empty() {
            return Err(bad("empty entry"));
        }
        let (reference, alias) = match item.split_once(" as ") {
            Some((r, a)) => (r.trim(), Some(a.trim())),
            None => (item, None),
        };
        let (object_type, rest) = match reference.split_once('/') {
            Some(("secret", rest)) => (ObjectType::Secret, rest),
            Some(("key", rest)) => (ObjectType::Key, rest),
            Some(("cert", rest)) => (ObjectType::Cert, rest),
            Some((other, _)) => return Err(bad(&format!("unknown type {other:?}"))),
            None => (ObjectType::Secret, reference),
        };
        let (name, version) = match rest.split_once('@') {
            Some((n, v)) => (n, Some(v)),
            None => (rest, None),
        };
        if name.is_empty()
            || name.len() > 127
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(bad(&format!(
                "object name {name:?} must be 1-127 letters, digits or '-'"
            )));
        }
        if let Some(v) = version
            && (v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            return Err(bad(&format!("version {v:?} must be letters and digits")));
        }
        if let Some(a) = alias
            && !is_secret_key(a)
        {
            return Err(bad(&format!(
                "alias {a:?} must be a file name of letters, digits, '-', '_' or '.'"
            )));
        }
        let object = KeyVaultObject {
            object_type,
            name: name.to_string(),
            version: version.map(str::to_string),
            alias: alias.map(str::to_string),
        };
        if objects.iter().any(|o| o.file_name() == object.file_name()) {
            return Err(bad(&format!(
                "file name {:?} is used twice; give one an alias",
                object.file_name()
            )));
        }
        objects.push(object);
    }
    Ok(objects)
}

fn parse_env(key: &str, value: &str) -> Result<Vec<EnvBinding>, Malformed> {
    const EXPECTED: &str = "a comma list of ENV_NAME=OBJECT";
    let mut env: Vec<EnvBinding> = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        let bad = |why: &str| Malformed::new(key, value, format!("{EXPECTED} ({why})"));
        let Some((name, object)) = item.split_once('=') else {
            return Err(bad(&format!("{item:?} has no '='")));
        };
        let (name, object) = (name.trim(), object.trim());
        if !is_env_name(name) {
            return Err(bad(&format!(
                "{name:?} is not a valid environment variable name"
            )));
        }
        if !is_secret_key(object) {
            return Err(bad(&format!("{object:?} is not an object file name")));
        }
        if env.iter().any(|e| e.env_name == name) {
            return Err(bad(&format!("{name} is listed twice")));
        }
        env.push(EnvBinding {
            env_name: name.to_string(),
            object: object.to_string(),
        });
    }
    Ok(env)
}

fn name_list(key: &str, value: &str, separator: char) -> Result<Vec<String>, Malformed> {
    let names: Vec<String> = value
        .split(separator)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err(Malformed::new(
            key,
            value,
            "a comma list of container names",
        ));
    }
    Ok(names)
}

/// Key Vault names: 3-24 characters, letters, digits and single hyphens, starting with a letter.
fn keyvault_name(key: &str, value: &str) -> Result<String, Malformed> {
    let v = value.trim();
    let ok = (3..=24).contains(&v.len())
        && v.starts_with(|c: char| c.is_ascii_alphabetic())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !v.contains("--");
    if ok {
        Ok(v.to_ascii_lowercase())
    } else {
        Err(Malformed::new(
            key,
            value,
            "a Key Vault name: 3-24 letters, digits and single hyphens, starting with a letter",
        ))
    }
}

fn is_guid(v: &str) -> bool {
    let groups: Vec<&str> = v.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn client_id(key: &str, value: &str) -> Result<String, Malformed> {
    if is_guid(value.trim()) {
        Ok(value.trim().to_string())
    } else {
        Err(Malformed::new(
            key,
            value,
            "a client id GUID like 00000000-0000-0000-0000-000000000000",
        ))
    }
}

fn tenant_id(key: &str, value: &str) -> Result<String, Malformed> {
    let v = value.trim();
    let domain = v.contains('.')
        && v.len() <= 253
        && v.split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if is_guid(v) || domain {
        Ok(v.to_string())
    } else {
        Err(Malformed::new(
            key,
            value,
            "a tenant id GUID or a verified domain like contoso.onmicrosoft.com",
        ))
    }
}

fn mount_path(key: &str, value: &str) -> Result<String, Malformed> {
    let v = value.trim();
    let ok = v.starts_with('/')
        && v.len() > 1
        && !v.contains(':')
        && !v.split('/').any(|seg| seg == "..");
    if ok {
        Ok(v.trim_end_matches('/').to_string())
    } else {
        Err(Malformed::new(
            key,
            value,
            "an absolute path other than / without '..' or ':'",
        ))
    }
}

/// RFC 1123 subdomain, as Kubernetes requires for object names.
pub fn is_dns_subdomain(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|label| {
            !label.is_empty()
                && label.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && label.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

fn dns_subdomain<'a>(key: &str, value: &'a str) -> Result<&'a str, Malformed> {
    if is_dns_subdomain(value) {
        Ok(value)
    } else {
        Err(Malformed::new(
            key,
            value,
            "a Kubernetes object name (lower-case letters, digits, '-' and '.')",
        ))
    }
}

/// Secret data keys: letters, digits, '-', '_' and '.', not "." or "..".
pub fn is_secret_key(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 253
        && v != "."
        && v != ".."
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn is_env_name(v: &str) -> bool {
    !v.is_empty()
        && !v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> Annotations {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn inline(extra: &[(&str, &str)]) -> Result<InjectionRequest, Malformed> {
        let mut pairs = vec![(KEYVAULT, "kv-demo"), (OBJECTS, "secret/db-password")];
        pairs.extend_from_slice(extra);
        parse(&annotations(&pairs))
    }

    #[test]
    fn objects_grammar() {
        let cases: &[(&str, Vec<KeyVaultObject>)] = &[
            (
                "db-password",
                vec![KeyVaultObject {
                    object_type: ObjectType::Secret,
                    name: "db-password".into(),
                    version: None,
                    alias: None,
                }],
            ),
            (
                "cert/tls@0123abcd as tls.crt, key/signing",
                vec![
                    KeyVaultObject {
                        object_type: ObjectType::Cert,
                        name: "tls".into(),
                        version: Some("0123abcd".into()),
                        alias: Some("tls.crt".into()),
                    },
                    KeyVaultObject {
                        object_type: ObjectType::Key,
                        name: "signing".into(),
                        version: None,
                        alias: None,
                    },
                ],
            ),
        ];
        for (input, want) in cases {
            let got = parse(&annotations(&[(KEYVAULT, "kv-demo"), (OBJECTS, input)])).unwrap();
            assert_eq!(
                got.source,
                Source::Inline {
                    keyvault: "kv-demo".into(),
                    objects: want.clone()
                },
                "{input}"
            );
        }
    }

    #[test]
    fn malformed_values_name_key_value_and_expectation() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[(OBJECTS, "blob/x")],
                r#"annotation keywire.dev/objects="blob/x" is invalid: a comma list of TYPE/NAME[@VERSION][ as ALIAS], TYPE one of secret, key, cert (unknown type "blob")"#,
            ),
            (
                &[(OBJECTS, "a,,b")],
                r#"annotation keywire.dev/objects="a,,b" is invalid: a comma list of TYPE/NAME[@VERSION][ as ALIAS], TYPE one of secret, key, cert (empty entry)"#,
            ),
            (
                &[(OBJECTS, "a as x, b as x")],
                r#"annotation keywire.dev/objects="a as x, b as x" is invalid: a comma list of TYPE/NAME[@VERSION][ as ALIAS], TYPE one of secret, key, cert (file name "x" is used twice; give one an alias)"#,
            ),
            (
                &[(IDENTITY, "magic")],
                r#"annotation keywire.dev/identity="magic" is invalid: one of workload, service-principal, managed-identity, pod-identity"#,
            ),
            (
                &[(TOKEN_EXPIRATION, "60")],
                r#"annotation keywire.dev/token-expiration="60" is invalid: whole seconds from 3600 to 86400"#,
            ),
            (
                &[(TOKEN_EXPIRATION, "86401")],
                r#"annotation keywire.dev/token-expiration="86401" is invalid: whole seconds from 3600 to 86400"#,
            ),
            (
                &[(CLIENT_ID, "not-a-guid")],
                r#"annotation keywire.dev/client-id="not-a-guid" is invalid: a client id GUID like 00000000-0000-0000-0000-000000000000"#,
            ),
            (
                &[(TENANT_ID, "bad tenant")],
                r#"annotation keywire.dev/tenant-id="bad tenant" is invalid: a tenant id GUID or a verified domain like contoso.onmicrosoft.com"#,
            ),
            (
                &[(MOUNT_PATH, "relative/path")],
                r#"annotation keywire.dev/mount-path="relative/path" is invalid: an absolute path other than / without '..' or ':'"#,
            ),
            (
                &[(MOUNT_PATH, "/mnt/../etc")],
                r#"annotation keywire.dev/mount-path="/mnt/../etc" is invalid: an absolute path other than / without '..' or ':'"#,
            ),
            (
                &[(ENV, "PASSWORD")],
                r#"annotation keywire.dev/env="PASSWORD" is invalid: a comma list of ENV_NAME=OBJECT ("PASSWORD" has no '=')"#,
            ),
            (
                &[(ENV, "A=db-password,A=db-password")],
                r#"annotation keywire.dev/env="A=db-password,A=db-password" is invalid: a comma list of ENV_NAME=OBJECT (A is listed twice)"#,
            ),
            (
                &[(ENV, "PASSWORD=missing")],
                r#"annotation keywire.dev/env="PASSWORD=missing" is invalid: PASSWORD=missing to name an object of keywire.dev/objects (one of: db-password)"#,
            ),
            (
                &[(CREDENTIALS_SECRET, "Bad_Name")],
                r#"annotation keywire.dev/credentials-secret="Bad_Name" is invalid: a Kubernetes object name (lower-case letters, digits, '-' and '.')"#,
            ),
            (
                &[(SYNC_SECRET, "-x")],
                r#"annotation keywire.dev/sync-secret="-x" is invalid: a Kubernetes object name (lower-case letters, digits, '-' and '.')"#,
            ),
            (
                &[(CONTAINERS, " , ")],
                r#"annotation keywire.dev/containers=" , " is invalid: a comma list of container names"#,
            ),
        ];
        for (extra, want) in cases {
            let mut pairs = vec![(KEYVAULT, "kv-demo"), (OBJECTS, "secret/db-password")];
            for (k, v) in extra.iter() {
                pairs.retain(|(pk, _)| pk != k);
                pairs.push((k, v));
            }
            let err = parse(&annotations(&pairs)).unwrap_err();
            assert_eq!(err.to_string(), *want);
        }
    }

    #[test]
    fn source_must_be_exactly_one() {
        let err = parse(&annotations(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"annotation keywire.dev/keyvault="" is invalid: a Key Vault name (or keywire.dev/secret-provider-class) on pods labelled keywire.dev/inject=true"#
        );
        let err = parse(&annotations(&[
            (SECRET_PROVIDER_CLASS, "mine"),
            (KEYVAULT, "kv-demo"),
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"annotation keywire.dev/secret-provider-class="mine" is invalid: either keywire.dev/secret-provider-class or keywire.dev/keyvault, not both"#
        );
        let err = parse(&annotations(&[(KEYVAULT, "kv-demo")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"annotation keywire.dev/objects="" is invalid: a comma list of TYPE/NAME[@VERSION][ as ALIAS] when keywire.dev/keyvault is set"#
        );
        let err = parse(&annotations(&[(KEYVAULT, "1kv"), (OBJECTS, "a")])).unwrap_err();
        assert_eq!(err.key, KEYVAULT);
        let got = parse(&annotations(&[(SECRET_PROVIDER_CLASS, "mine")])).unwrap();
        assert_eq!(got.source, Source::Existing("mine".into()));
    }

    #[test]
    fn keyvault_name_is_normalised_to_lower_case() {
        let got = parse(&annotations(&[(KEYVAULT, "KV-Demo"), (OBJECTS, "x")])).unwrap();
        assert!(matches!(got.source, Source::Inline { keyvault, .. } if keyvault == "kv-demo"));
    }

    #[test]
    fn optional_fields_parse() {
        let got = inline(&[
            (IDENTITY, "service-principal"),
            (TOKEN_EXPIRATION, "7200"),
            (CONTAINERS, "app, sidecar"),
            (MOUNT_PATH, "/etc/secrets/"),
            (TENANT_ID, "contoso.onmicrosoft.com"),
            (ENV, "DB_PASSWORD=db-password"),
        ])
        .unwrap();
        assert_eq!(got.identity, Some(IdentityMode::ServicePrincipal));
        assert_eq!(got.token_expiration, Some(7200));
        assert_eq!(got.containers, Some(vec!["app".into(), "sidecar".into()]));
        assert_eq!(got.mount_path.as_deref(), Some("/etc/secrets"));
        assert_eq!(got.tenant_id.as_deref(), Some("contoso.onmicrosoft.com"));
        assert_eq!(
            got.env,
            vec![EnvBinding {
                env_name: "DB_PASSWORD".into(),
                object: "db-password".into()
            }]
        );
    }

    #[test]
    fn azure_skip_containers_split_on_semicolons() {
        let got = parse_azure(&annotations(&[(azure::SKIP_CONTAINERS, "a; b;")])).unwrap();
        assert_eq!(got.skip_containers, vec!["a".to_string(), "b".to_string()]);
        let err = parse_azure(&annotations(&[(azure::TOKEN_EXPIRATION, "100")])).unwrap_err();
        assert_eq!(err.key, azure::TOKEN_EXPIRATION);
    }

    #[test]
    fn unknown_keywire_keys_are_reported() {
        let a = annotations(&[
            (KEYVAULT, "x"),
            ("keywire.dev/keyvualt", "y"),
            ("other/x", "z"),
        ]);
        assert_eq!(unknown_keys(&a), vec!["keywire.dev/keyvualt"]);
    }
}
