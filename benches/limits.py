#!/usr/bin/env python3
"""Measures a release `keywire webhook` at its limits, for the sizing in docs/operations.md:
RSS and file descriptors idle, after real AdmissionReviews, holding --max-connections idle TLS
connections (half HTTP/1.1 keep-alive, half h2), and under 80 clients that send ~4 MiB bodies
and stall. Bounded in time (about a minute).

    python3 benches/limits.py target/release/keywire [max-connections]
"""
import json, os, socket, ssl, subprocess, sys, tempfile, threading, time, urllib.request
import resource

keywire = os.path.abspath(sys.argv[1])
cap = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
tmp = tempfile.mkdtemp()
subprocess.run([keywire, "certs", "--out-dir", tmp, "--host", "127.0.0.1"], check=True,
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


port, mport = free_port(), free_port()
server = subprocess.Popen([keywire, "webhook", "--listen", f"127.0.0.1:{port}",
                           "--metrics-listen", f"127.0.0.1:{mport}",
                           "--tls-cert-file", f"{tmp}/tls.crt", "--tls-key-file", f"{tmp}/tls.key",
                           "--cluster-state", f"{root}/tests/data/cluster-state.yaml",
                           "--max-connections", str(cap)],
                          stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/server.log", "w"))
pid = server.pid


def status(field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field):
            return int(line.split()[1])


def fds():
    return len(os.listdir(f"/proc/{pid}/fd"))


def get(path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def metric(name):
    for line in get("/metrics")[1].splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])


for _ in range(200):
    try:
        if get("/readyz")[0] == 200:
            break
    except OSError:
        pass
    time.sleep(0.05)

def context(alpn):
    c = ssl.create_default_context(cafile=f"{tmp}/ca.crt")
    c.set_alpn_protocols([alpn])
    return c

h1, h2 = context("http/1.1"), context("h2")
review = open(f"{root}/tests/data/reviews/workload-identity-inline.json", "rb").read()
rows = []
def row(what):
    rows.append((what, status("VmRSS:"), status("VmHWM:"), fds()))

row("idle, after start-up")
conn = h1.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")
request = (b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
           + str(len(review)).encode() + b"\r\n\r\n" + review)
start = time.time()
for _ in range(2000):
    conn.sendall(request)
    got = b""
    while b"\r\n\r\n" not in got:
        got += conn.recv(65536)
    head, _, body = got.partition(b"\r\n\r\n")
    length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
    while len(body) < length:
        body += conn.recv(65536)
conn.close()
row(f"after 2,000 AdmissionReviews on one connection ({2000 / (time.time() - start):.0f}/s)")

held = []
for i in range(cap + 200):
    try:
        s = (h1 if i % 2 == 0 else h2).wrap_socket(
            socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")
        if i % 2 == 0:
            s.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        else:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        s.settimeout(2)
        if s.recv(64):
            held.append(s)
    except (OSError, ssl.SSLError):
        pass
time.sleep(0.5)
row(f"holding {len(held)} idle connections (h1 and h2), {cap + 200 - len(held)} more refused")
ready_at_cap = get("/readyz")[0]
open_at_cap, rejected = metric("keywire_connections_open"), metric("keywire_connections_rejected_total")
for s in held:
    s.close()
time.sleep(1)

results = []
def stalled(i):
    try:
        s = h1.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")
        length = 4 * 1024 * 1024 - 4096
        s.sendall(f"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode())
        s.settimeout(0.05)
        sent, chunk, got = 0, b" " * 65536, b""
        start = time.time()
        while sent + len(chunk) < length - 1024 and b"\r\n\r\n" not in got:
            try:
                s.sendall(chunk); sent += len(chunk)
            except (socket.timeout, ssl.SSLError, OSError):
                pass
            try:
                got += s.recv(4096)
            except (socket.timeout, ssl.SSLWantReadError, ssl.SSLError, OSError):
                pass
        s.settimeout(15)
        while b"\r\n\r\n" not in got:
            more = s.recv(4096)
            if not more:
                break
            got += more
        results.append((got[9:12].decode(errors="replace"), time.time() - start))
    except Exception as e:  # noqa: BLE001 - a measurement, not a test
        results.append((repr(e), 0))

threads = [threading.Thread(target=stalled, args=(i,)) for i in range(80)]
for t in threads: t.start()
for t in threads: t.join()
codes = {}
for code, _ in results:
    codes[code] = codes.get(code, 0) + 1
row(f"80 clients sending ~4 MiB bodies and stalling: {codes}")
server.terminate(); server.wait()
print(f"| load | VmRSS | VmHWM (peak so far) | open fds |")
print(f"|---|---|---|---|")
for what, rss, hwm, n in rows:
    print(f"| {what} | {rss / 1024:.1f} MiB | {hwm / 1024:.1f} MiB | {n} |")
print(f"\nat the cap: /readyz {ready_at_cap}, keywire_connections_open {open_at_cap}, rejected {rejected}")
