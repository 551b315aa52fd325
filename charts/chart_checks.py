#!/usr/bin/env python3
"""Offline checks of rendered chart output, run by charts/test.sh (needs PyYAML).

  chart_checks.py local-schemas OUT_DIR          kubernetes-validate's schemas, resolvable offline
  chart_checks.py crd-schemas OUT_DIR FILE...   strict JSON schemas, kubeconform layout, from
                                                 every CustomResourceDefinition in FILEs
  chart_checks.py to-json FILE...                one JSON object per line, for the node validators
  chart_checks.py contract RENDER_DIR            what docs/operations.md and issue 6 promise of
                                                 each rendered values set; prints one line a check
"""
import base64
import json
import os
import sys

import yaml


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


# --- CRD -> JSON schema ------------------------------------------------------------------------

def strict(node):
    """OpenAPI v3 (structural) -> JSON schema that rejects unknown fields, as kubeconform -strict."""
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["oneOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable"):
        out.pop("nullable")
        if "type" in out:
            out["type"] = [out["type"], "null"]
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_schemas(out_dir, files):
    written = 0
    for path in files:
        for d in docs(path):
            if d.get("kind") != "CustomResourceDefinition":
                continue
            spec = d["spec"]
            for v in spec["versions"]:
                schema = strict(v["schema"]["openAPIV3Schema"])
                props = schema.setdefault("properties", {})
                props["apiVersion"] = {"type": "string", "enum": [f'{spec["group"]}/{v["name"]}']}
                props["kind"] = {"type": "string", "enum": [spec["names"]["kind"]]}
                props["metadata"] = {"type": "object"}
                target = os.path.join(out_dir, spec["group"])
                os.makedirs(target, exist_ok=True)
                name = f'{spec["names"]["kind"].lower()}_{v["name"]}.json'
                with open(os.path.join(target, name), "w") as f:
                    json.dump(schema, f, indent=1)
                written += 1
    print(f"{written} CRD schema(s) in {out_dir}", file=sys.stderr)


# --- the contract of each rendered values set -------------------------------------------------

class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"  ok    {name}")
        else:
            self.failed += 1
            print(f"  FAIL  {name} {detail}")


def by_kind(objs, kind):
    return [o for o in objs if o.get("kind") == kind]


def excluded(selector):
    for e in selector.get("matchExpressions", []):
        if e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "NotIn":
            return set(e["values"])
    return set()


def contract(render_dir):
    c = Checks()
    for name in sorted(os.listdir(render_dir)):
        if not name.endswith(".yaml"):
            continue
        values_set = name[: -len(".yaml")]
        objs = docs(os.path.join(render_dir, name))
        print(f"{values_set}:")
        deploys = [d for d in by_kind(objs, "Deployment") if d["metadata"]["name"].endswith("-webhook")]
        c.check("one webhook Deployment", len(deploys) == 1)
        if not deploys:
            continue
        dep = deploys[0]
        ns = dep["metadata"]["namespace"]
        pod = dep["spec"]["template"]["spec"]
        ctr = pod["containers"][0]
        args = ctr["args"]
        mode = (
            "self-managed" if "--self-managed-certs" in args
            else "cert-manager" if any(o["kind"] == "Certificate" for o in objs)
            else "provided"
        )
        c.check("at least 2 webhook replicas", dep["spec"]["replicas"] >= 2)
        c.check("rolling update never lowers ready replicas",
                dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0)
        sc = ctr["securityContext"]
        psc = pod["securityContext"]
        c.check("hardened securityContext",
                sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
                and sc["capabilities"]["drop"] == ["ALL"] and psc["runAsNonRoot"]
                and psc["seccompProfile"]["type"] == "RuntimeDefault")
        c.check("probes on /healthz and /readyz on the metrics port",
                ctr["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
                and ctr["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"})
        c.check("resources requested, memory limited",
                "requests" in ctr["resources"] and "memory" in ctr["resources"].get("limits", {}))
        c.check("topology spread", len(pod.get("topologySpreadConstraints", [])) >= 1)
        pdbs = [p for p in by_kind(objs, "PodDisruptionBudget") if p["metadata"]["name"].endswith("-webhook")]
        c.check("PodDisruptionBudget keeps a replica", len(pdbs) == 1 and pdbs[0]["spec"]["minAvailable"] >= 1)
        # The optional NetworkPolicy (off by default; on in the everything set) selects the webhook
        # pods and admits exactly their webhook and metrics ports.
        netpols = by_kind(objs, "NetworkPolicy")
        if values_set.startswith("everything"):
            ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
            admitted = sorted(p["port"] for r in netpols[0]["spec"]["ingress"] for p in r["ports"]) if netpols else []
            c.check("NetworkPolicy admits only the webhook and metrics ports of the webhook pods",
                    len(netpols) == 1
                    and netpols[0]["spec"]["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
                    and netpols[0]["spec"]["policyTypes"] == ["Ingress"]
                    and admitted == sorted([ports["https"], ports["metrics"]])
                    and all("from" in r for r in netpols[0]["spec"]["ingress"]))
        else:
            c.check("no NetworkPolicy unless asked for", netpols == [])
        volume = next(v for v in pod["volumes"] if v["name"] == "certs")
        c.check(f"{mode}: certificate volume",
                ("emptyDir" in volume) if mode == "self-managed" else ("secret" in volume))

        configs = by_kind(objs, "MutatingWebhookConfiguration") + by_kind(objs, "ValidatingWebhookConfiguration")
        hooks = [(cfg, h) for cfg in configs for h in cfg["webhooks"]]
        c.check("webhooks rendered", len(hooks) >= 1)
        for cfg, h in hooks:
            label = f'{cfg["kind"]}/{h["name"]}'
            c.check(f"{label}: kube-system and {ns} excluded",
                    {"kube-system", ns} <= excluded(h["namespaceSelector"]))
            c.check(f"{label}: mirror pods skipped",
                    any("kubernetes.io/config.mirror" in m["expression"] for m in h.get("matchConditions", [])))
            c.check(f"{label}: matchPolicy Equivalent, timeout <= 30s",
                    h["matchPolicy"] == "Equivalent" and 1 <= h["timeoutSeconds"] <= 30)
            svc = h["clientConfig"]["service"]
            c.check(f"{label}: calls the chart's Service",
                    svc["namespace"] == ns and any(s["metadata"]["name"] == svc["name"] for s in by_kind(objs, "Service")))
            has_bundle = "caBundle" in h["clientConfig"]
            if mode == "provided":
                pem = base64.b64decode(h["clientConfig"].get("caBundle", "")).decode(errors="replace")
                c.check(f"{label}: provided caBundle is a PEM certificate", "BEGIN CERTIFICATE" in pem)
            else:
                # Helm must not own the caBundle keywire or cainjector writes, or an upgrade would wipe it.
                c.check(f"{label}: no caBundle rendered ({mode} writes it)", not has_bundle)
            annotations = cfg["metadata"].get("annotations") or {}
            c.check(f"{label}: cert-manager injection iff cert-manager mode",
                    ("cert-manager.io/inject-ca-from" in annotations) == (mode == "cert-manager"))
            if cfg["kind"] == "ValidatingWebhookConfiguration":
                # Policy's namespaces are its own: the mutating webhook's opt-outs never exempt one.
                sel = h["namespaceSelector"]
                c.check(f"{label}: only explicit namespace exclusions",
                        not sel.get("matchLabels") and len(sel.get("matchExpressions", [])) == 1)
                rules = {(r["apiGroups"][0], res, op) for r in h["rules"] for res in r["resources"] for op in r["operations"]}
                c.check(f"{label}: pod UPDATEs and ReplicationController templates judged",
                        {("", "pods", "UPDATE"), ("", "replicationcontrollers", "CREATE"),
                         ("", "replicationcontrollers", "UPDATE")} <= rules)
            if cfg["kind"] == "MutatingWebhookConfiguration":
                c.check(f"{label}: sideEffects None", h["sideEffects"] == "None")
                c.check(f"{label}: opt-in objectSelector",
                        any(e["key"] in ("keywire.dev/inject", "azure.workload.identity/use") and e["operator"] == "In"
                            for e in h["objectSelector"]["matchExpressions"]))
        if mode == "self-managed":
            secret = next(a for a in args if a.startswith("--cert-secret=")).split("=", 1)[1].split("/")
            role = [r for r in by_kind(objs, "Role") if r["metadata"]["name"].endswith("-webhook-certificates")]
            rules = role[0]["rules"] if role else []
            c.check("self-managed: Secret in the release namespace", secret[0] == ns)
            c.check("self-managed: get/update only on its own Secret",
                    any(r.get("resourceNames") == [secret[1]] and set(r["verbs"]) == {"get", "update"} for r in rules))
            names = {cfg["metadata"]["name"] for cfg in configs}
            flagged = {a.split("=", 1)[1] for a in args if a.startswith(("--webhook-config=", "--validating-webhook-config="))}
            c.check("self-managed: publishes to exactly the rendered configurations", names == flagged, f"{names} vs {flagged}")
            hosts = {a.split("=", 1)[1] for a in args if a.startswith("--service-host=")}
            svc_name = hooks[0][0]["webhooks"][0]["clientConfig"]["service"]["name"] if hooks else ""
            c.check("self-managed: certificate for the Service's DNS name", f"{svc_name}.{ns}.svc" in hosts)
        if mode == "cert-manager":
            cert = [x for x in by_kind(objs, "Certificate") if not x["spec"].get("isCA")]
            c.check("cert-manager: serving Certificate mounted",
                    len(cert) == 1 and cert[0]["spec"]["secretName"] == volume["secret"]["secretName"])
        for crd in by_kind(objs, "CustomResourceDefinition"):
            c.check(f'{crd["metadata"]["name"]}: kept on uninstall',
                    crd["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep")
        controllers = [d for d in by_kind(objs, "Deployment") if d["metadata"]["name"].endswith("-controller")]
        c.check("controller: enabled by default", len(controllers) == 1)
        for d in controllers:
            pod = d["spec"]["template"]["spec"]
            cargs = pod["containers"][0]["args"]
            env = {e["name"]: e for e in pod["containers"][0].get("env", [])}
            lease = [a for a in cargs if a.startswith("--lease-name=")]
            c.check("controller: 2 replicas, one Lease in the release namespace",
                    d["spec"]["replicas"] >= 2 and len(lease) == 1
                    and env.get("POD_NAMESPACE", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace")
            sa = pod.get("serviceAccountName")
            roles = {r["metadata"]["name"]: r for r in by_kind(objs, "ClusterRole")}
            bound = [b for b in by_kind(objs, "ClusterRoleBinding")
                     if any(s.get("name") == sa for s in b.get("subjects", []))]
            rules = [r for b in bound for r in roles[b["roleRef"]["name"]]["rules"]]
            def verbs(group, resource):
                return {v for r in rules if group in r["apiGroups"] and resource in r["resources"] for v in r["verbs"]}
            c.check("controller RBAC: ServiceAccount tokens, nothing else on ServiceAccounts written",
                    verbs("", "serviceaccounts/token") == {"create"}
                    and verbs("", "serviceaccounts") == {"get", "list", "watch"})
            c.check("controller RBAC: Secrets never updated, only applied (patch) and collected",
                    "update" not in verbs("", "secrets") and {"patch", "delete"} <= verbs("", "secrets"))
            c.check("controller RBAC: pods read-only", verbs("", "pods") == {"get", "list", "watch"})
            c.check("controller RBAC: no wildcard", all("*" not in r["verbs"] and "*" not in r["resources"] for r in rules))
    print(f"contract: {c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


# --- kubernetes-validate's schemas, made loadable by kubeconform offline ----------------------

def local_schemas(out):
    """Copies every <version>-local-strict tree with "$id" dropped and "/api/_definitions.json"
    references made relative, so they resolve on disk instead of at https://kubernetes.io/."""
    import kubernetes_validate

    src = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema")
    prefix = "/api/_definitions.json"

    def fix(node):
        if isinstance(node, dict):
            return {
                k: ("_definitions.json" + v[len(prefix):] if k == "$ref" and isinstance(v, str)
                    and v.startswith(prefix) else fix(v))
                for k, v in node.items()
                if k != "$id"
            }
        if isinstance(node, list):
            return [fix(n) for n in node]
        return node

    for d in sorted(os.listdir(src)):
        if not d.endswith("-local-strict"):
            continue
        os.makedirs(os.path.join(out, d))
        for f in os.listdir(os.path.join(src, d)):
            with open(os.path.join(src, d, f)) as fh:
                schema = json.load(fh)
            with open(os.path.join(out, d, f), "w") as fh:
                json.dump(fix(schema), fh)


def main(argv):
    if len(argv) == 3 and argv[1] == "local-schemas":
        local_schemas(argv[2])
        return 0
    if len(argv) >= 3 and argv[1] == "crd-schemas":
        crd_schemas(argv[2], argv[3:])
        return 0
    if len(argv) >= 2 and argv[1] == "to-json":
        for path in argv[2:]:
            for d in docs(path):
                print(json.dumps(d))
        return 0
    if len(argv) == 3 and argv[1] == "contract":
        return contract(argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
