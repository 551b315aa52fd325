//! The pure core: the annotation contract, resolution, JSON Patch, policy and the one decision
//! function. Synchronous functions over plain data: no tokio, no kube client, no files.
//!
//! Layers, lowest first (a module only uses the ones above it):
//! `azure` -> `annotations` -> `policy` -> `lookup` -> `plan` -> `patch` -> `rules` -> `engine` ->
//! `workload`. `echo` (escaping input that is echoed) stands apart, used by any of them.

pub mod annotations;
pub mod azure;
pub mod echo;
pub mod engine;
pub mod lookup;
pub mod patch;
pub mod plan;
pub mod policy;
pub mod rules;
pub mod workload;
