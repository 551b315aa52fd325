//! `keywire webhook`: the HTTPS admission server and everything around it: the AdmissionReview
//! envelope, TLS with hot reload, self-managed certificates and Prometheus metrics. Its lookups
//! come from `crate::cluster` (watch caches) or a `--cluster-state` file.

pub mod admission;
pub mod budget;
pub mod certs;
pub mod connections;
pub mod metrics;
pub mod selfcert;
pub mod server;
pub mod tls;
