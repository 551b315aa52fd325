//! keywire: wire Kubernetes pods to Azure Key Vault.
//!
//! Read top-down: `annotations` (the contract) -> `plan` (resolution and names) -> `patch`
//! (JSON Patch) -> `engine` (the one decision function). `admission` and `manifests` are the
//! envelopes the front doors use; `server`, `tls`, `metrics` and `cache` are the webhook's I/O.

pub mod admission;
pub mod annotations;
pub mod cache;
pub mod certs;
pub mod cli;
pub mod engine;
pub mod lookup;
pub mod manifests;
pub mod metrics;
pub mod patch;
pub mod plan;
pub mod policy;
pub mod report;
pub mod selfcert;
pub mod server;
pub mod tls;
