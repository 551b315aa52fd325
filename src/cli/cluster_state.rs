//! `--cluster-state FILE`: the Kubernetes objects (ServiceAccounts, Namespaces, KeywirePolicies)
//! that answer lookups offline, read into the core's in-memory `ClusterState`.

use std::path::Path;

use crate::cli::manifests;
use crate::core::lookup::ClusterState;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read cluster state {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cluster state {path}: {reason}")]
    Parse { path: String, reason: String },
}

/// Reads every object of the file; kinds the core does not look up are ignored.
pub fn load(path: &Path) -> Result<ClusterState, StateError> {
    let parse = |reason: String| StateError::Parse {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|source| StateError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut state = ClusterState::new();
    for doc in manifests::parse_documents(&text).map_err(parse)? {
        state.insert_object(&doc).map_err(parse)?;
    }
    Ok(state)
}

/// `load`, or an empty state without a file.
pub fn load_or_empty(path: Option<&Path>) -> Result<ClusterState, String> {
    match path {
        Some(p) => load(p).map_err(|e| e.to_string()),
        None => Ok(ClusterState::new()),
    }
}
