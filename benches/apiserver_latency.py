#!/usr/bin/env python3
"""The apiserver's view of keywire: pod-create latency with and without keywire's webhooks.

Driven by benches/run-apiserver-latency.sh (which starts the webhook, the namespace and the
ServiceAccounts, and cleans up); see its header. Standard library only.

For every repetition, phase (no webhooks / both webhooks registered, order alternating per
repetition), client count and pod kind, it POSTs N pods to kube-apiserver over persistent
HTTPS keep-alive connections (one per client thread), timing each create from the first byte
sent to the last byte of the response read, and counts the AdmissionReviews the webhook
answered meanwhile (keywire_admission_requests_total on its /metrics, before and after).
"""

import argparse
import base64
import copy
import datetime
import http.client
import json
import os
import ssl
import statistics
import sys
import threading
import time
import urllib.parse

INJECT_STATUS = "keywire.dev/status"
# Every pod carries its batch's label, so the pods can be deleted in small collections at the
# end (one DELETE of thousands of pods outlasts the API server's 60 s request timeout).
BATCH_LABEL = "apiserver-latency/batch"
TENANT = "00000000-0000-0000-0000-0000000000aa"


def log(msg):
    print(f"[apiserver-latency] {msg}", file=sys.stderr, flush=True)


def die(msg):
    log(f"ERROR: {msg}")
    sys.exit(1)


# --- pods ----------------------------------------------------------------------------------

def pod(kind, batch_label="none"):
    container = {"name": "app", "image": "registry.k8s.io/pause:3.10"}
    meta = {"generateName": f"{kind}-", "labels": {"app": "apiserver-latency", BATCH_LABEL: batch_label}}
    spec = {"containers": [container]}
    if kind == "opted-in":
        meta["labels"]["keywire.dev/inject"] = "true"
        meta["annotations"] = {
            "keywire.dev/keyvault": "kv-demo",
            "keywire.dev/objects": "secret/db-password",
            "keywire.dev/env": "DB_PASSWORD=db-password",
        }
        spec["serviceAccountName"] = "app"
    elif kind == "plain":
        pass
    elif kind == "plain-no-token":
        # A plain pod without the API-access token volume the ServiceAccount admission plugin
        # adds to every pod: shows what that projected token volume does to the match conditions.
        spec["automountServiceAccountToken"] = False
    else:
        die(f"unknown pod kind {kind!r} (opted-in, plain, plain-no-token)")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


# --- HTTP ----------------------------------------------------------------------------------

class Api:
    """One persistent HTTPS keep-alive connection to kube-apiserver (bearer token auth)."""

    def __init__(self, server, ctx, token):
        u = urllib.parse.urlsplit(server)
        self.host, self.port = u.hostname, u.port or 443
        self.ctx, self.token = ctx, token
        self.conn = None
        self.reconnects = 0

    def connect(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=60)
        self.conn.connect()

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, content_type="application/json"):
        """Returns (status, parsed body or text, seconds). Reconnects once if the server closed
        the connection; the retried request alone is timed."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in (0, 1):
            if self.conn is None:
                self.connect()
            try:
                t0 = time.perf_counter()
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                dt = time.perf_counter() - t0
                break
            except (http.client.RemoteDisconnected, http.client.CannotSendRequest,
                    BrokenPipeError, ConnectionResetError):
                if attempt:
                    raise
                self.reconnects += 1
                self.connect()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return resp.status, parsed, dt


def scrape(metrics_addr):
    """keywire_admission_requests_total summed over outcomes: {'mutate': n, 'validate': n}."""
    conn = http.client.HTTPConnection(metrics_addr, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    counts = {"mutate": 0.0, "validate": 0.0}
    for line in text.splitlines():
        if not line.startswith("keywire_admission_requests_total{"):
            continue
        labels, value = line.rsplit(" ", 1)
        for endpoint in counts:
            if f'endpoint="{endpoint}"' in labels:
                counts[endpoint] += float(value)
    return counts


# --- webhook registration -------------------------------------------------------------------

CONFIG_PATHS = {
    "mutating": "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
    "validating": "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
}


def load_configs(args):
    """The shipped configurations (as JSON, from kubectl), each webhook's clientConfig pointed
    at the loopback webhook exactly as e2e/suite/harness.rs register() does; renamed so a
    concurrent e2e run's `keywire` configurations are not overwritten."""
    with open(args.ca_bundle, "rb") as f:
        bundle = base64.b64encode(f.read()).decode()
    out = {}
    for kind, file, path in (("mutating", args.mutating_json, "/mutate"),
                             ("validating", args.validating_json, "/validate")):
        with open(file) as f:
            config = json.load(f)
        config["metadata"] = {"name": args.config_name, "labels": config["metadata"].get("labels", {})}
        for hook in config["webhooks"]:
            hook["clientConfig"] = {"url": f"{args.webhook_url}{path}", "caBundle": bundle}
        out[kind] = config
    return out


def register(api, configs, name):
    for kind, config in configs.items():
        status, body, _ = api.request(
            "PATCH", f"{CONFIG_PATHS[kind]}/{name}?fieldManager=keywire-apiserver-latency&force=true",
            json.dumps(config).encode(), content_type="application/apply-patch+yaml")
        if status not in (200, 201):
            die(f"registering the {kind} webhook configuration: HTTP {status}: {body}")


def unregister(api, name):
    for kind in CONFIG_PATHS:
        status, body, _ = api.request("DELETE", f"{CONFIG_PATHS[kind]}/{name}")
        if status not in (200, 202, 404):
            die(f"deleting the {kind} webhook configuration: HTTP {status}: {body}")


def wait_for_phase(api, args, phase, timeout=60):
    """The API server picks configuration changes up asynchronously: probe with opted-in pods
    until it calls both webhooks (phase both) or neither (phase none), twice in a row."""
    deadline = time.monotonic() + timeout
    probe = pod("opted-in", "probe")
    probe["metadata"]["generateName"] = "probe-"
    path = f"/api/v1/namespaces/{args.namespace}/pods"
    good = 0
    while True:
        before = scrape(args.metrics)
        status, body, _ = api.request("POST", path, probe)
        after = scrape(args.metrics)
        if status != 201:
            die(f"probe pod create failed: HTTP {status}: {body}")
        injected = (body["metadata"].get("annotations") or {}).get(INJECT_STATUS) == "injected"
        m, v = after["mutate"] - before["mutate"], after["validate"] - before["validate"]
        ok = (injected and m >= 1 and v >= 1) if phase == "both" else (not injected and m == 0 and v == 0)
        good = good + 1 if ok else 0
        if good >= 2:
            return
        if time.monotonic() > deadline:
            die(f"the API server did not switch to phase {phase!r} within {timeout}s "
                f"(last probe: injected={injected}, mutate calls={m}, validate calls={v})")
        time.sleep(0.2)


# --- measurement ----------------------------------------------------------------------------

def pct(sorted_xs, p):
    """Nearest-rank percentile."""
    k = max(0, min(len(sorted_xs) - 1, -(-len(sorted_xs) * p // 100) - 1))
    return sorted_xs[int(k)]


def batch(apis, args, kind, phase, label):
    """N creates of `kind`, split over len(apis) concurrent clients. Returns the latencies (ms),
    the wall time, webhook calls and the count of creates whose pod came back injected."""
    path = f"/api/v1/namespaces/{args.namespace}/pods"
    body = json.dumps(pod(kind, label)).encode()
    # Warm-up (not measured, not counted): every connection sends a few creates first.
    for api in apis:
        for _ in range(args.warmup):
            status, resp, _ = api.request("POST", path, body)
            if status != 201:
                die(f"warm-up create of a {kind} pod ({phase}) failed: HTTP {status}: {resp}")
    shares = [args.n // len(apis) + (1 if i < args.n % len(apis) else 0) for i in range(len(apis))]
    results = [None] * len(apis)
    errors = []
    start = threading.Barrier(len(apis) + 1)

    def worker(i):
        lat, injected = [], 0
        try:
            start.wait()
            for _ in range(shares[i]):
                status, resp, dt = apis[i].request("POST", path, body)
                if status != 201:
                    raise RuntimeError(f"create of a {kind} pod ({phase}) failed: HTTP {status}: {resp}")
                lat.append(dt * 1000.0)
                if (resp["metadata"].get("annotations") or {}).get(INJECT_STATUS) == "injected":
                    injected += 1
        except Exception as e:  # reported by the main thread
            errors.append(e)
        results[i] = (lat, injected)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(apis))]
    for t in threads:
        t.start()
    before = scrape(args.metrics)
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    after = scrape(args.metrics)
    if errors:
        die(str(errors[0]))
    lat = [x for r in results for x in r[0]]
    injected = sum(r[1] for r in results)
    calls = {k: after[k] - before[k] for k in after}
    return lat, wall, calls, injected


def summarize(lat):
    xs = sorted(lat)
    return {"n": len(xs), "p50_ms": pct(xs, 50), "p90_ms": pct(xs, 90), "p99_ms": pct(xs, 99),
            "max_ms": xs[-1], "mean_ms": statistics.fmean(xs)}


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", required=True)
    ap.add_argument("--ca-file", required=True, help="CA of the API server's serving certificate")
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--metrics", required=True, help="host:port of the webhook's metrics listener")
    ap.add_argument("--webhook-url", required=True, help="https://127.0.0.1:PORT of the webhook")
    ap.add_argument("--ca-bundle", required=True, help="the webhook's CA (PEM) for caBundle")
    ap.add_argument("--mutating-json", required=True)
    ap.add_argument("--validating-json", required=True)
    ap.add_argument("--config-name", default="keywire-apiserver-latency")
    ap.add_argument("-n", type=int, default=300, help="measured creates per batch")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--clients", default="1,4", help="comma list of concurrent connections")
    ap.add_argument("--kinds", default="opted-in,plain,plain-no-token")
    ap.add_argument("--warmup", type=int, default=5, help="unmeasured creates per connection per batch")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--cleanup-pods", action="store_true", help="delete the namespace's pods at the end")
    args = ap.parse_args()

    clients = [int(c) for c in args.clients.replace(" ", ",").split(",") if c]
    kinds = [k for k in args.kinds.replace(" ", ",").split(",") if k]
    for k in kinds:
        pod(k)  # validates the name
    if args.n < max(clients):
        die("-n must be at least the largest client count")
    os.makedirs(args.out_dir, exist_ok=True)
    ctx = ssl.create_default_context(cafile=args.ca_file)
    with open(args.token_file) as f:
        token = f.read().strip()
    configs = load_configs(args)
    control = Api(args.server, ctx, token)
    pool = [Api(args.server, ctx, token) for _ in range(max(clients))]
    for api in pool:
        api.connect()

    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = loadavg()
    log(f"load average at start: {load_start}")
    runs = []  # one record per (rep, phase, clients, kind)
    labels = ["probe"]  # batch labels used
    t_start = time.monotonic()
    for rep in range(args.reps):
        phases = ("none", "both") if rep % 2 == 0 else ("both", "none")
        for phase in phases:
            if phase == "both":
                register(control, configs, args.config_name)
            else:
                unregister(control, args.config_name)
            wait_for_phase(control, args, phase)
            for c in clients:
                for kind in kinds:
                    label = f"b{len(runs)}"
                    labels.append(label)
                    lat, wall, calls, injected = batch(pool[:c], args, kind, phase, label)
                    s = summarize(lat)
                    rec = {"rep": rep + 1, "phase": phase, "clients": c, "kind": kind, **s,
                           "wall_s": wall, "creates_per_s": len(lat) / wall,
                           "mutate_calls": calls["mutate"], "validate_calls": calls["validate"],
                           "injected": injected, "latencies_ms": [round(x, 3) for x in lat]}
                    runs.append(rec)
                    log(f"rep {rep + 1}/{args.reps} {phase:<4} clients={c} {kind:<14} "
                        f"p50 {s['p50_ms']:.2f} p99 {s['p99_ms']:.2f} max {s['max_ms']:.2f} ms, "
                        f"{rec['creates_per_s']:.0f}/s, calls mutate {calls['mutate']:.0f} "
                        f"validate {calls['validate']:.0f}, injected {injected}/{len(lat)}")
    unregister(control, args.config_name)
    elapsed = time.monotonic() - t_start
    load_end = loadavg()

    # --- aggregate: medians over the repetitions; "added" = median of per-repetition
    # differences (both - none), the phases of one repetition having run back to back.
    rows, problems = [], []
    for c in clients:
        for kind in kinds:
            per = {ph: [r for r in runs if r["clients"] == c and r["kind"] == kind and r["phase"] == ph]
                   for ph in ("none", "both")}
            for ph in ("none", "both"):
                rs = per[ph]
                row = {"kind": kind, "clients": c, "webhooks": ph,
                       "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                       "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                       "max_ms": statistics.median(r["max_ms"] for r in rs),
                       "creates_per_s": statistics.median(r["creates_per_s"] for r in rs),
                       "mutate_per_create": statistics.median(r["mutate_calls"] / r["n"] for r in rs),
                       "validate_per_create": statistics.median(r["validate_calls"] / r["n"] for r in rs),
                       "injected_fraction": statistics.median(r["injected"] / r["n"] for r in rs)}
                if ph == "both":
                    by_rep = {r["rep"]: r for r in per["none"]}
                    row["added_p50_ms"] = statistics.median(r["p50_ms"] - by_rep[r["rep"]]["p50_ms"] for r in rs)
                    row["added_p99_ms"] = statistics.median(r["p99_ms"] - by_rep[r["rep"]]["p99_ms"] for r in rs)
                rows.append(row)
                # Sanity: what the webhooks should have done.
                for r in rs:
                    calls = (r["mutate_calls"], r["validate_calls"])
                    if ph == "none" and calls != (0, 0):
                        problems.append(f"rep {r['rep']} {kind} clients={c} none: webhook calls {calls}")
                    if kind == "opted-in" and ph == "both" and r["injected"] != r["n"]:
                        problems.append(f"rep {r['rep']} opted-in clients={c}: only {r['injected']}/{r['n']} injected")
                    if kind != "opted-in" and ph == "both" and calls != (0, 0):
                        problems.append(f"rep {r['rep']} {kind} clients={c} both: {calls[0]:.0f} mutate and "
                                        f"{calls[1]:.0f} validate calls for {r['n']} creates (target: 0)")

    header = (f"{'pod kind':<15}{'clients':>8}  {'webhooks':<9}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
              f"{'+p50 ms':>9}{'+p99 ms':>9}{'creates/s':>10}{'mutate/create':>15}{'validate/create':>17}")
    lines = [header, "-" * len(header)]
    for row in rows:
        added = (f"{row['added_p50_ms']:>+9.2f}{row['added_p99_ms']:>+9.2f}" if "added_p50_ms" in row
                 else f"{'':>9}{'':>9}")
        lines.append(f"{row['kind']:<15}{row['clients']:>8}  {row['webhooks']:<9}{row['p50_ms']:>8.2f}"
                     f"{row['p99_ms']:>8.2f}{row['max_ms']:>8.2f}{added}{row['creates_per_s']:>10.0f}"
                     f"{row['mutate_per_create']:>15.2f}{row['validate_per_create']:>17.2f}")
    table = "\n".join(lines)
    notes = (f"N={args.n} measured creates per batch, {args.reps} repetitions (phases interleaved, "
             f"order alternating), medians over repetitions; +p50/+p99 = median over repetitions of "
             f"(both - none). Latency = POST /api/v1/namespaces/NS/pods on a keep-alive HTTPS "
             f"connection, request sent to response read. Load average {load_start} at start, "
             f"{load_end} at end; {elapsed:.0f}s.")

    summary = {
        "started": started.isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 1),
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "nproc": os.cpu_count(),
        "n": args.n, "reps": args.reps, "clients": clients, "kinds": kinds, "warmup": args.warmup,
        "namespace": args.namespace,
        "reconnects": control.reconnects + sum(a.reconnects for a in pool),
        "rows": rows,
        "problems": problems,
        "table": table,
        "notes": notes,
        "runs": [{k: v for k, v in r.items() if k != "latencies_ms"} for r in runs],
    }
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(args.out_dir, "samples.json"), "w") as f:
        json.dump([{k: r[k] for k in ("rep", "phase", "clients", "kind", "latencies_ms")} for r in runs], f)
    with open(os.path.join(args.out_dir, "table.txt"), "w") as f:
        f.write(table + "\n\n" + notes + "\n")

    for api in pool + [control]:
        api.close()

    print()
    print(table)
    print()
    print(notes)
    if summary["reconnects"]:
        print(f"note: {summary['reconnects']} reconnect(s) to the API server during the run")
    if problems:
        print()
        print("PROBLEMS:")
        for p in problems:
            print(f"  - {p}")
    print()
    print(f"results: {args.out_dir}/results.json (summary, per-repetition), samples.json (every latency), table.txt")
    sys.stdout.flush()
    if args.cleanup_pods:
        delete_pods(Api(args.server, ctx, token), args.namespace, labels)
    return 0


def delete_pods(api, namespace, labels):
    """Deletes the run's pods one batch label at a time; never fails the run."""
    deleted = 0
    for label in labels:
        sel = urllib.parse.quote(f"{BATCH_LABEL}={label}")
        try:
            status, body, _ = api.request("DELETE", f"/api/v1/namespaces/{namespace}/pods?labelSelector={sel}")
        except Exception as e:  # noqa: BLE001
            log(f"deleting the pods labelled {label}: {e!r}; leaving the rest")
            break
        if status != 200:
            log(f"deleting the pods labelled {label}: HTTP {status}; leaving the rest")
            break
        deleted += len((body or {}).get("items") or [])
    api.close()
    log(f"deleted {deleted} pods from {namespace}")


if __name__ == "__main__":
    sys.exit(main())
