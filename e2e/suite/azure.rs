//! The Azure side of the e2e suite, as `e2e/azure/up.sh` started it: Keycloak as Entra (through
//! `e2e/azure/entra.py`), and the Key Vault stand-in (its admin API, and its data plane with a
//! writer's Entra token, the way a platform team would put values in a vault).

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{env, repo};

/// Client id of the Keycloak client the suite writes vault contents with.
const WRITER: &str = "e2e-vault-writer";
const WRITER_SECRET: &str = "e2e-vault-writer-secret-7f3a";

pub struct Azure {
    pub tenant: String,
    pub authority: String,
    pub admin: String,
    http: reqwest::Client,
    writer_token: tokio::sync::Mutex<Option<(std::time::Instant, String)>>,
}

impl Azure {
    pub fn from_env() -> Azure {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = std::fs::read(env("E2E_CA_FILE")).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).unwrap())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Azure {
            tenant: env("E2E_TENANT"),
            authority: env("E2E_ENTRA_AUTHORITY"),
            admin: env("E2E_KEYVAULT_ADMIN"),
            http,
            writer_token: tokio::sync::Mutex::new(None),
        }
    }

    /// Runs `entra.py ARGS` (Keycloak's admin REST API) and returns its stdout.
    pub fn entra(&self, args: &[&str]) -> String {
        let out = Command::new(env("E2E_PYTHON"))
            .arg(repo("e2e/azure/entra.py"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "entra.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A workload-identity app: the client `client_id`, federated with one ServiceAccount.
    pub fn federate(&self, client_id: &str, namespace: &str, service_account: &str) {
        self.entra(&[
            "federated-client",
            &self.tenant,
            client_id,
            &format!("system:serviceaccount:{namespace}:{service_account}"),
        ]);
    }

    /// A service principal: the client `client_id` with a secret.
    pub fn service_principal(&self, client_id: &str, secret: &str) {
        self.entra(&["secret-client", &self.tenant, client_id, secret]);
    }

    /// Keycloak's own record of the logins of a client (realm events), newest first.
    pub fn events(&self, client_id: &str) -> Vec<Value> {
        self.entra(&["events", &self.tenant, "--client", client_id])
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Creates (once) a vault of the default tenant; returns its URL.
    pub async fn vault(&self, name: &str) -> String {
        let r = self
            .http
            .put(format!("{}/vaults/{name}", self.admin))
            .json(&json!({"tenant": self.tenant}))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "create vault {name}: {}",
            r.status()
        );
        r.json::<Value>().await.unwrap()["url"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn token(&self) -> String {
        let mut cached = self.writer_token.lock().await;
        if let Some((at, t)) = cached.as_ref()
            && at.elapsed() < Duration::from_secs(200)
        {
            return t.clone();
        }
        let r = self
            .http
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                self.authority, self.tenant
            ))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", WRITER),
                ("client_secret", WRITER_SECRET),
                ("scope", "https://vault.azure.net/.default"),
            ])
            .send()
            .await
            .unwrap();
        if r.status() == reqwest::StatusCode::UNAUTHORIZED {
            // First use: register the writer.
            drop(r);
            self.service_principal(WRITER, WRITER_SECRET);
            *cached = None;
            drop(cached);
            return Box::pin(self.token()).await;
        }
        let token = r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .expect("writer token")
            .to_string();
        *cached = Some((std::time::Instant::now(), token.clone()));
        token
    }

    async fn data_plane(&self, method: reqwest::Method, url: String, body: Value) -> Value {
        let token = self.token().await;
        let r = self
            .http
            .request(method, format!("{url}?api-version=7.5"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or_default();
        assert!(status.is_success(), "{url}: {status} {}", v["error"]);
        v
    }

    /// Sets a new version of a secret; returns the version.
    pub async fn set_secret(&self, vault_url: &str, name: &str, value: &str) -> String {
        let v = self
            .data_plane(
                reqwest::Method::PUT,
                format!("{vault_url}/secrets/{name}"),
                json!({"value": value}),
            )
            .await;
        v["id"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string()
    }

    /// Imports a certificate (base64 PFX without password, or PEM); returns the response.
    pub async fn import_certificate(
        &self,
        vault_url: &str,
        name: &str,
        value: &str,
        content_type: &str,
    ) -> Value {
        self.data_plane(
            reqwest::Method::POST,
            format!("{vault_url}/certificates/{name}/import"),
            json!({"value": value, "policy": {"secret_props": {"contentType": content_type}}}),
        )
        .await
    }

    /// Creates a key (`{"kty": "RSA", "key_size": 2048}` or `{"kty": "EC", "crv": "P-256"}`).
    pub async fn create_key(&self, vault_url: &str, name: &str, spec: Value) -> Value {
        self.data_plane(
            reqwest::Method::POST,
            format!("{vault_url}/keys/{name}/create"),
            spec,
        )
        .await
    }

    /// Sets (`{"mode": "429", "retry_after": 5, "vault": V}`) or clears (`{"mode": "none"}`) faults.
    pub async fn faults(&self, spec: Value) {
        let r = self
            .http
            .put(format!("{}/faults", self.admin))
            .json(&spec)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "faults: {}", r.status());
    }

    /// The stand-in's counters of one vault.
    pub async fn stats(&self, vault: &str) -> Value {
        let v: Value = self
            .http
            .get(format!("{}/stats", self.admin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["vaults"][vault].clone()
    }

    /// Authenticated reads of one secret of a vault so far.
    pub async fn secret_reads(&self, vault: &str, name: &str) -> u64 {
        self.stats(vault).await["objects"]["secrets"][name]
            .as_u64()
            .unwrap_or(0)
    }

    /// `e2e/azure/standin.sh ACTION`: `kill` is an outage, `start` the recovery.
    pub fn standin(&self, action: &str) {
        let out = Command::new(repo("e2e/azure/standin.sh"))
            .arg(action)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "standin.sh {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
