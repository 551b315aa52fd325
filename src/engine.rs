//! The one decision function every front door calls: pod JSON + namespace + lookups -> `Decision`.

use serde_json::Value;

use crate::annotations::{self, IdentityMode};
use crate::lookup::Lookups;
use crate::patch::{self, PatchOp};
use crate::plan::{self, PodView, Settings, Wiring};

/// Admission warnings longer than this are cut; the API server shows them verbatim.
pub const MAX_WARNING_LEN: usize = 120;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Nothing to do (not opted in, or already wired).
    Unchanged,
    Patch(Vec<PatchOp>),
    Denied(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    pub warnings: Vec<String>,
}

impl Decision {
    fn denied(message: String, warnings: Vec<String>) -> Self {
        Decision {
            outcome: Outcome::Denied(message),
            warnings,
        }
    }

    pub fn is_allowed(&self) -> bool {
        !matches!(self.outcome, Outcome::Denied(_))
    }

    pub fn patch(&self) -> &[PatchOp] {
        match &self.outcome {
            Outcome::Patch(ops) => ops,
            _ => &[],
        }
    }

    /// Short label for metrics and logs.
    pub fn outcome_label(&self) -> &'static str {
        match self.outcome {
            Outcome::Unchanged => "unchanged",
            Outcome::Patch(_) => "patched",
            Outcome::Denied(_) => "denied",
        }
    }
}

fn clip(mut warning: String) -> String {
    if warning.chars().count() > MAX_WARNING_LEN {
        warning = warning
            .chars()
            .take(MAX_WARNING_LEN - 3)
            .collect::<String>()
            + "...";
    }
    warning
}

/// Decides what to do with a pod (or pod template) being created in `namespace`.
pub fn decide(
    pod: &Value,
    namespace: &str,
    lookups: &dyn Lookups,
    settings: &Settings,
) -> Decision {
    let view = PodView::from_json(pod);
    let keywire = annotations::is_opted_in(&view.labels);
    let azure = annotations::uses_azure_workload_identity(&view.labels);
    let mut warnings: Vec<String> = annotations::unknown_keys(&view.annotations)
        .into_iter()
        .map(|k| format!("unknown annotation {k} is ignored"))
        .collect();

    if !keywire {
        let asks = view
            .annotations
            .keys()
            .any(|k| k.starts_with("keywire.dev/") && k != annotations::STATUS);
        if asks {
            warnings.push(format!(
                "keywire.dev annotations are ignored without the label {}=true",
                annotations::INJECT_LABEL
            ));
        }
    }

    let mut wiring = Wiring::default();
    if keywire {
        let request = match annotations::parse(&view.annotations) {
            Ok(r) => r,
            Err(e) => return Decision::denied(e.to_string(), clip_all(warnings)),
        };
        let plan = match plan::resolve(&request, &view, namespace, lookups, settings) {
            Ok(p) => p,
            Err(e) => return Decision::denied(e, clip_all(warnings)),
        };
        if plan.identity.mode() == IdentityMode::PodIdentity {
            warnings.push(
                "identity pod-identity is deprecated (AAD Pod Identity is retired); use workload"
                    .to_string(),
            );
        }
        wiring.add_plan(&plan, settings);
    }
    if azure {
        let request = match annotations::parse_azure(&view.annotations) {
            Ok(r) => r,
            Err(e) => return Decision::denied(e.to_string(), clip_all(warnings)),
        };
        match plan::resolve_azure(&request, &view, namespace, lookups, settings) {
            Ok(p) => {
                if p.client_id.is_none() {
                    warnings.push(format!(
                        "ServiceAccount {namespace}/{} has no {}; AZURE_CLIENT_ID not injected",
                        view.service_account,
                        annotations::azure::CLIENT_ID
                    ));
                }
                wiring.add_azure(&p, settings)
            }
            Err(e) => return Decision::denied(e, clip_all(warnings)),
        }
    }
    if wiring == Wiring::default() {
        return Decision {
            outcome: Outcome::Unchanged,
            warnings: clip_all(warnings),
        };
    }

    match patch::render(pod, &wiring) {
        Ok((ops, more)) => {
            warnings.extend(more);
            Decision {
                outcome: if ops.is_empty() {
                    Outcome::Unchanged
                } else {
                    Outcome::Patch(ops)
                },
                warnings: clip_all(warnings),
            }
        }
        Err(e) => Decision::denied(e, clip_all(warnings)),
    }
}

fn clip_all(warnings: Vec<String>) -> Vec<String> {
    warnings.into_iter().map(clip).collect()
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "engine_props.rs"]
mod props;
