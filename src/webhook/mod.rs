//! `keywire webhook`: the HTTPS admission server and everything around it: the AdmissionReview
//! envelope, TLS with hot reload, self-managed certificates, the API-server watch caches that
//! back `Lookups`, and Prometheus metrics.

pub mod admission;
pub mod cache;
pub mod certs;
pub mod metrics;
pub mod selfcert;
pub mod server;
pub mod tls;
