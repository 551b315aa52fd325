//! The one decision function every front door calls: pod JSON + namespace + lookups -> `Decision`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::Value;

use crate::core::annotations::{self, IdentityMode};
use crate::core::lookup::Lookups;
use crate::core::patch::{self, PatchOp};
use crate::core::plan::{self, Plan, PodView, Settings, Wiring};
use crate::core::policy::{self, Enforcement, Policy};
use crate::core::rules::{self, Violation};

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
    /// Every policy violation, whatever its enforcement (Enforce ones also deny).
    pub violations: Vec<Violation>,
}

impl Decision {
    pub fn new(outcome: Outcome, warnings: Vec<String>) -> Self {
        Decision {
            outcome,
            warnings: warnings.into_iter().map(clip).collect(),
            violations: Vec::new(),
        }
    }

    /// The unchanged decision for anything out of scope.
    pub fn unchanged() -> Self {
        Decision::new(Outcome::Unchanged, Vec::new())
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

    /// `Audit` violations as admission `auditAnnotations` (keys are unique per policy and rule).
    pub fn audit_annotations(&self) -> BTreeMap<String, String> {
        self.violations
            .iter()
            .filter(|v| v.enforcement == Enforcement::Audit)
            .map(|v| (format!("{}.{}", v.policy, v.rule), v.to_string()))
            .collect()
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

/// Namespace labels for policy selection; offline, the label the API server always sets.
fn namespace_labels(lookups: &dyn Lookups, namespace: &str) -> BTreeMap<String, String> {
    lookups
        .namespace(namespace)
        .map(|n| n.labels)
        .unwrap_or_else(|| {
            [(
                "kubernetes.io/metadata.name".to_string(),
                namespace.to_string(),
            )]
            .into()
        })
}

/// Cluster defaults, overridden by the selecting policies' defaults.
fn effective_settings<'a>(settings: &'a Settings, selecting: &[&Policy]) -> Cow<'a, Settings> {
    let d = policy::defaults(selecting);
    if d == policy::Defaults::default() {
        return Cow::Borrowed(settings);
    }
    let mut s = settings.clone();
    s.default_tenant_id = d.tenant_id.or(s.default_tenant_id);
    if let Some(host) = d.authority_host {
        s.authority_host = host;
    }
    s.default_mount_path = d.mount_path.or(s.default_mount_path);
    s.default_identity = d
        .identity
        .as_deref()
        .and_then(IdentityMode::parse)
        .or(s.default_identity);
    Cow::Owned(s)
}

/// The controller's question about a pod or pod template: what keywire config does it ask for,
/// and do the namespace's KeywirePolicies allow it? Judged on the object as it is, whether or not
/// the webhook wired it already (annotations may have changed since), by the same parsing,
/// resolution and rules as `decide`. `Err` carries the denial message.
pub fn judge(
    pod: &Value,
    namespace: &str,
    lookups: &dyn Lookups,
    settings: &Settings,
) -> Result<Plan, String> {
    let view = PodView::from_json(pod);
    let all_policies = lookups.policies();
    let selecting = if all_policies.is_empty() {
        Vec::new()
    } else {
        policy::selecting(&all_policies, &namespace_labels(lookups, namespace))
    };
    let settings = effective_settings(settings, &selecting);
    let request = annotations::parse(&view.annotations).map_err(|e| e.to_string())?;
    let plan = plan::resolve(&request, &view, namespace, lookups, settings.as_ref())?;
    let subject = rules::Subject {
        view: &view,
        pod,
        namespace,
        plan: Some(&plan),
        azure: None,
        settings: settings.as_ref(),
        lookups,
        whole_pod: false,
    };
    let enforced: Vec<String> = rules::evaluate(&selecting, &subject)
        .into_iter()
        .filter(|v| v.enforcement == Enforcement::Enforce)
        .map(|v| v.to_string())
        .collect();
    if enforced.is_empty() {
        Ok(plan)
    } else {
        Err(enforced.join("; "))
    }
}

/// Every KeywirePolicy violation of a pod or pod template as it is now, whatever its enforcement,
/// for policy reports; `None` when no policy selects the namespace. Malformed annotations are not
/// violations (they are reported where they are refused); only what resolves is judged.
pub fn audit(
    pod: &Value,
    namespace: &str,
    lookups: &dyn Lookups,
    settings: &Settings,
) -> Option<Vec<Violation>> {
    let all_policies = lookups.policies();
    if all_policies.is_empty() {
        return None;
    }
    let selecting = policy::selecting(&all_policies, &namespace_labels(lookups, namespace));
    if selecting.is_empty() {
        return None;
    }
    let settings = effective_settings(settings, &selecting);
    let settings = settings.as_ref();
    let view = PodView::from_json(pod);
    let plan = annotations::is_opted_in(&view.labels)
        .then(|| annotations::parse(&view.annotations).ok())
        .flatten()
        .and_then(|r| plan::resolve(&r, &view, namespace, lookups, settings).ok());
    let azure = annotations::uses_azure_workload_identity(&view.labels)
        .then(|| annotations::parse_azure(&view.annotations).ok())
        .flatten()
        .and_then(|r| plan::resolve_azure(&r, &view, namespace, lookups, settings).ok());
    let subject = rules::Subject {
        view: &view,
        pod,
        namespace,
        plan: plan.as_ref(),
        azure: azure.as_ref(),
        settings,
        lookups,
        whole_pod: true,
    };
    Some(rules::evaluate(&selecting, &subject))
}

/// Decides what to do with a pod being created in `namespace`.
pub fn decide(
    pod: &Value,
    namespace: &str,
    lookups: &dyn Lookups,
    settings: &Settings,
) -> Decision {
    decide_at(pod, "", namespace, lookups, settings)
}

/// Decides for a pod, or a pod template found at `field_prefix` (e.g. `spec.template`) of a workload.
pub fn decide_at(
    pod: &Value,
    field_prefix: &str,
    namespace: &str,
    lookups: &dyn Lookups,
    settings: &Settings,
) -> Decision {
    let view = PodView::from_json(pod);
    let all_policies = lookups.policies();
    // Most clusters have few or no policies: only then is the namespace worth looking up.
    let selecting = if all_policies.is_empty() {
        Vec::new()
    } else {
        policy::selecting(&all_policies, &namespace_labels(lookups, namespace))
    };
    let settings = effective_settings(settings, &selecting);
    let settings = settings.as_ref();

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
    let mut keywire_plan = None;
    let mut azure_plan = None;
    if keywire {
        let request = match annotations::parse(&view.annotations) {
            Ok(r) => r,
            Err(e) => return Decision::new(Outcome::Denied(e.to_string()), warnings),
        };
        let plan = match plan::resolve(&request, &view, namespace, lookups, settings) {
            Ok(p) => p,
            Err(e) => return Decision::new(Outcome::Denied(e), warnings),
        };
        if plan.identity.mode() == IdentityMode::PodIdentity {
            warnings.push(
                "identity pod-identity is deprecated (AAD Pod Identity is retired); use workload"
                    .to_string(),
            );
        }
        wiring.add_plan(&plan, &view, settings);
        keywire_plan = Some(plan);
    }
    if azure {
        let request = match annotations::parse_azure(&view.annotations) {
            Ok(r) => r,
            Err(e) => return Decision::new(Outcome::Denied(e.to_string()), warnings),
        };
        if let Some(v) = &request.proxy_value {
            warnings.push(format!(
                "{}={v:?} still injects the proxy sidecar (only the key counts)",
                annotations::azure::INJECT_PROXY_SIDECAR
            ));
        }
        match plan::resolve_azure(&request, &view, namespace, lookups, settings) {
            Ok(p) => {
                if p.client_id.is_none() {
                    warnings.push(format!(
                        "ServiceAccount {namespace}/{} has no {}; AZURE_CLIENT_ID not injected",
                        view.service_account,
                        annotations::azure::CLIENT_ID
                    ));
                }
                wiring.add_azure(&p, &view, settings);
                azure_plan = Some(p);
            }
            Err(e) => return Decision::new(Outcome::Denied(e), warnings),
        }
    }

    let ops = if wiring == Wiring::default() {
        Vec::new()
    } else {
        match patch::render(pod, &wiring) {
            Ok((ops, more)) => {
                warnings.extend(more);
                ops
            }
            Err(e) => return Decision::new(Outcome::Denied(e), warnings),
        }
    };
    let outcome = if ops.is_empty() {
        Outcome::Unchanged
    } else {
        Outcome::Patch(ops)
    };
    if selecting.is_empty() {
        return Decision::new(outcome, warnings);
    }

    // Policies judge the pod as it will be stored.
    let mut stored = pod.clone();
    if let Outcome::Patch(ops) = &outcome
        && let Err(e) = patch::apply(&mut stored, ops)
    {
        return Decision::new(
            Outcome::Denied(format!("internal error applying patch: {e}")),
            warnings,
        );
    }
    let subject = rules::Subject {
        view: &view,
        pod: &stored,
        namespace,
        plan: keywire_plan.as_ref(),
        azure: azure_plan.as_ref(),
        settings,
        lookups,
        whole_pod: true,
    };
    let violations: Vec<Violation> = rules::evaluate(&selecting, &subject)
        .into_iter()
        .map(|v| v.under(field_prefix))
        .collect();
    with_violations(outcome, warnings, violations)
}

/// The decision once policy has spoken: `Enforce` violations deny (every one listed), `Warn`
/// ones become warnings, and all are kept for reports and audit annotations.
fn with_violations(
    outcome: Outcome,
    mut warnings: Vec<String>,
    violations: Vec<Violation>,
) -> Decision {
    let enforced: Vec<String> = violations
        .iter()
        .filter(|v| v.enforcement == Enforcement::Enforce)
        .map(Violation::to_string)
        .collect();
    warnings.extend(
        violations
            .iter()
            .filter(|v| v.enforcement == Enforcement::Warn)
            .map(|v| format!("{}/{}: {}", v.policy, v.rule, v.message)),
    );
    let outcome = if enforced.is_empty() {
        outcome
    } else {
        Outcome::Denied(enforced.join("; "))
    };
    let mut decision = Decision::new(outcome, warnings);
    decision.violations = violations;
    decision
}

/// The validating webhook's verdict on a pod that already exists and whose keywire or Azure
/// Workload Identity metadata an UPDATE changes: the policies judge it as it is (an UPDATE
/// cannot rewire it), never a patch.
pub fn judge_as_is(
    pod: &Value,
    namespace: &str,
    lookups: &dyn Lookups,
    settings: &Settings,
) -> Decision {
    let violations = audit(pod, namespace, lookups, settings).unwrap_or_default();
    with_violations(Outcome::Unchanged, Vec::new(), violations)
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "engine_props.rs"]
mod props;
