//! keywire: wire Kubernetes pods to Azure Key Vault.
//!
//! One engine, several front doors. Read top-down:
//! - `core`: the pure decision path (annotations -> plan -> patch -> policy rules -> engine);
//! - `webhook`: the HTTPS admission server around `core` (`keywire webhook`);
//! - `cli`: the command line: `mutate`, `review`, `certs`, and the flags of every command;
//! - `controller`: materialises SecretProviderClasses and synced Secrets (`keywire controller`);
//! - `cluster`: the API server behind `Lookups` (watch caches), shared by webhook and controller;
//! - `yaml`: YAML read and written as kubectl reads it (manifests for `mutate`).
//!
//! `docs/architecture.md` has the picture.

pub mod cli;
pub mod cluster;
pub mod controller;
pub mod core;
pub mod webhook;
pub mod yaml;

#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
