#!/usr/bin/env python3
"""keyvault_standin.py - an Azure Key Vault data-plane stand-in for keywire's e2e suite.

HTTPS only. Every vault has a tenant; its tokens are checked against Keycloak (the Entra
stand-in): RS256 signature from the realm's JWKS, iss == {keycloak}/realms/{tenant}, aud
contains https://vault.azure.net, not expired.

Addressing. Each vault is reachable two ways:
  * canonical: its own port, vault URL https://127.0.0.1:{vault port}  (ids in answers are
    {vault URL}/secrets/{name}/{version}: exactly Key Vault's shape, which Microsoft's SDKs
    parse into vault_url/name/version; they reject ids with any extra path segment);
  * by path on the main port: vault URL https://127.0.0.1:{main port}/{vault}  (ids then are
    {that URL}/secrets/{name}/{version}). Fine for raw REST and clients that ignore ids; the
    Python SDK's models raise "is not a valid ID" on such ids.
Both share the same data. The admin API is on the main port only.

Data plane (api-version 7.x or YYYY-MM-DD accepted; shapes as in Key Vault's REST reference):
  secrets       PUT /secrets/{n}; GET /secrets/{n}[/{v}]; PATCH /secrets/{n}[/{v}];
                GET /secrets/{n}/versions; GET /secrets; DELETE /secrets/{n}
  certificates  POST /certificates/{n}/import (base64 PFX, base64 PEM or PEM text);
                GET /certificates/{n}[/{v}]; GET /certificates/{n}/versions;
                GET /certificates/{n}/policy; GET /certificates; DELETE /certificates/{n}
                (an import also creates the managed secret and key of the same name/version)
  keys          POST /keys/{n}/create; PUT /keys/{n} (import JWK); GET /keys/{n}[/{v}];
                GET /keys/{n}/versions; GET /keys; DELETE /keys/{n}
  Deleting removes the object at once (a vault without soft delete: no recoveryId).
Admin (no auth, loopback clients only), main port:
  PUT /_standin/vaults/{vault} {"tenant": T[, "port": P]}   create or update a vault
  GET /_standin/vaults, DELETE /_standin/vaults/{vault}
  GET /_standin/stats, POST /_standin/stats/reset
  GET|PUT /_standin/faults {"mode": "none"|"429"|"500"|"503", "retry_after": S,
                            "count": N (only the next N requests), "vault": V (only that vault)}
  GET /_standin/healthz
--state-file keeps vaults (with their ports) and contents across a kill and restart.
Never logs secret values or tokens.
"""
import argparse
import base64
import datetime
import hashlib
import http.server
import ipaddress
import json
import os
import random
import re
import ssl
import sys
import threading
import time
import urllib.parse
import uuid

import jwt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

VAULT_RESOURCE = "https://vault.azure.net"
API_VERSION_RE = re.compile(r"^(7\.\d+|\d{4}-\d{2}-\d{2}|2016-10-01)(-preview(\.\d+)?)?$")
NAME_RE = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
VERSION_RE = re.compile(r"^[0-9a-f]{32}$")
KINDS = ("secrets", "certificates", "keys")
RECOVERY = {"recoveryLevel": "Purgeable"}
CURVES = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1, "P-256K": ec.SECP256K1}
CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521", "secp256k1": "P-256K"}
RSA_OPS = ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
EC_OPS = ["sign", "verify"]
FWLINK = "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
KU_NAMES = [("digital_signature", "digitalSignature"), ("content_commitment", "nonRepudiation"),
            ("key_encipherment", "keyEncipherment"), ("data_encipherment", "dataEncipherment"),
            ("key_agreement", "keyAgreement"), ("key_cert_sign", "keyCertSign"), ("crl_sign", "cRLSign")]


class ApiError(Exception):
    def __init__(self, status, code, message, headers=None, inner=None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.inner = inner


def now():
    return int(time.time())


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_int(n, length=None):
    length = length or max(1, (n.bit_length() + 7) // 8)
    return b64u(n.to_bytes(length, "big"))


def unb64u(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def new_version():
    return uuid.uuid4().hex


def log(msg):
    sys.stderr.write(f"{datetime.datetime.now().isoformat(timespec='milliseconds')} {msg}\n")
    sys.stderr.flush()


# --- keys and JWKs --------------------------------------------------------------------------
def public_jwk(key):
    """Public JWK members (no kid) of a cryptography public or private key."""
    pub = key.public_key() if hasattr(key, "public_key") else key
    if isinstance(pub, rsa.RSAPublicKey):
        nums = pub.public_numbers()
        return {"kty": "RSA", "n": b64u_int(nums.n), "e": b64u_int(nums.e)}
    if isinstance(pub, ec.EllipticCurvePublicKey):
        nums = pub.public_numbers()
        size = (pub.curve.key_size + 7) // 8
        return {"kty": "EC", "crv": CURVE_NAMES.get(pub.curve.name, pub.curve.name),
                "x": b64u_int(nums.x, size), "y": b64u_int(nums.y, size)}
    raise ApiError(400, "BadParameter", "Unsupported key type.")


def private_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def jwk_from_import(j):
    """Validate an imported JWK; returns (public members, private members)."""
    if not isinstance(j, dict):
        raise ApiError(400, "BadParameter", "Property key is required.")
    kty = j.get("kty")
    try:
        if kty in ("RSA", "RSA-HSM"):
            n, e = int.from_bytes(unb64u(j["n"]), "big"), int.from_bytes(unb64u(j["e"]), "big")
            rsa.RSAPublicNumbers(e, n).public_key()
            pub = {"kty": kty, "n": b64u_int(n), "e": b64u_int(e)}
            priv_names = ("d", "p", "q", "dp", "dq", "qi")
        elif kty in ("EC", "EC-HSM"):
            crv = j["crv"]
            if crv not in CURVES:
                raise ApiError(400, "BadParameter", f"Unsupported curve {crv}.")
            size = (CURVES[crv]().key_size + 7) // 8
            x, y = int.from_bytes(unb64u(j["x"]), "big"), int.from_bytes(unb64u(j["y"]), "big")
            ec.EllipticCurvePublicNumbers(x, y, CURVES[crv]()).public_key()
            pub = {"kty": kty, "crv": crv, "x": b64u_int(x, size), "y": b64u_int(y, size)}
            priv_names = ("d",)
        else:
            raise ApiError(400, "BadParameter", f"Unsupported key type {kty!r}.")
    except ApiError:
        raise
    except Exception:
        raise ApiError(400, "BadParameter", "The key is invalid.")
    return pub, {k: j[k] for k in priv_names if k in j}


# --- certificates -----------------------------------------------------------------------------
PEM_KEY_RE = re.compile(rb"-----BEGIN ((?:[A-Z]+ )?(?:ENCRYPTED )?PRIVATE KEY)-----.+?-----END \1-----", re.S)


def parse_certificate(value, password):
    """-> (kind 'pkcs12'|'pem', private key, [certs, leaf first], secret value to store)."""
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "BadParameter", "Property value is required.")
    text = value.strip()
    pwd = password.encode() if password else None
    if text.startswith("-----BEGIN"):
        raw, pem = None, text.encode()
    else:
        try:
            raw = base64.b64decode(text, validate=False)
        except Exception:
            raise ApiError(400, "BadParameter", "The certificate content is not valid base64.")
        pem = raw if raw.lstrip().startswith(b"-----BEGIN") else None
    try:
        if pem is not None:
            m = PEM_KEY_RE.search(pem)
            if not m:
                raise ValueError("no private key")
            key = serialization.load_pem_private_key(m.group(0), pwd)
            certs = x509.load_pem_x509_certificates(pem)
            kind = "pem"
        else:
            key, cert, extra = pkcs12.load_key_and_certificates(raw, pwd)
            if key is None or cert is None:
                raise ValueError("no key or certificate")
            certs = [cert] + list(extra or [])
            kind = "pkcs12"
    except ApiError:
        raise
    except Exception:
        raise ApiError(400, "BadParameter",
                       "Private key is not specified in the specified X.509 PEM certificate content, "
                       "the content is not a certificate with its private key, or the password is wrong.")
    spki = lambda k: k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    want = spki(key.public_key())
    leaf = next((c for c in certs if spki(c.public_key()) == want), None)
    if leaf is None:
        raise ApiError(400, "BadParameter", "No certificate in the content matches its private key.")
    certs = [leaf] + [c for c in certs if c is not leaf]
    if kind == "pkcs12":
        if pwd:  # Key Vault keeps the PFX without a password
            raw = pkcs12.serialize_key_and_certificates(None, key, leaf, certs[1:] or None,
                                                        serialization.NoEncryption())
        stored = base64.b64encode(raw).decode()
    else:
        stored = pem.decode()
        if pwd:  # ... and the PEM key unencrypted
            stored = private_pem(key) + "".join(
                c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)
    return kind, key, certs, stored


def cert_policy(key, leaf, content_type, issuer_name):
    pub = public_jwk(key)
    kp = {"exportable": True, "kty": pub["kty"], "reuse_key": False}
    if pub["kty"] == "RSA":
        kp["key_size"] = key.key_size
    else:
        kp["crv"] = pub["crv"]
    x5 = {"subject": leaf.subject.rfc4514_string(), "ekus": [], "key_usage": []}
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = {}
        dns = san.get_values_for_type(x509.DNSName)
        if dns:
            sans["dns_names"] = dns
        emails = san.get_values_for_type(x509.RFC822Name)
        if emails:
            sans["emails"] = emails
        if sans:
            x5["sans"] = sans
    except x509.ExtensionNotFound:
        pass
    try:
        x5["ekus"] = [o.dotted_string for o in
                      leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value]
    except x509.ExtensionNotFound:
        pass
    try:
        ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        x5["key_usage"] = [kv for attr, kv in KU_NAMES if getattr(ku, attr)]
    except x509.ExtensionNotFound:
        pass
    nb, na = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    x5["validity_months"] = max(1, (na.year - nb.year) * 12 + na.month - nb.month)
    t = now()
    return {
        "key_props": kp, "secret_props": {"contentType": content_type}, "x509_props": x5,
        "lifetime_actions": [{"trigger": {"lifetime_percentage": 80},
                              "action": {"action_type": "EmailContacts"}}],
        "issuer": {"name": issuer_name or "Unknown"},
        "attributes": {"enabled": True, "created": t, "updated": t},
    }


# --- the store --------------------------------------------------------------------------------
class Store:
    """vaults[name] = {"tenant", "port", "secrets"|"certificates"|"keys": {obj: {"order": [v..],
    "versions": {v: record}}}}. All access under self.lock."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.RLock()
        self.vaults = {}
        if path and os.path.exists(path):
            with open(path) as f:
                self.vaults = json.load(f).get("vaults", {})

    def save(self):
        if not self.path:
            return
        tmp = f"{self.path}.tmp.{os.getpid()}.{threading.get_ident()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"format": 1, "vaults": self.vaults}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dfd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def check_name(name):
    if not NAME_RE.match(name or ""):
        raise ApiError(400, "BadParameter",
                       f"The request URI contains an invalid name: {name[:130] if name else ''}")


# --- token verification -----------------------------------------------------------------------
class InvalidToken(Exception):
    pass


class Verifier:
    def __init__(self, keycloak_url, ca_file, leeway):
        self.keycloak = keycloak_url.rstrip("/")
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.verify = ca_file or True
        self.leeway = leeway
        self.lock = threading.Lock()
        self.cache = {}  # tenant -> (fetched_at, {kid: key})

    def issuer(self, tenant):
        return f"{self.keycloak}/realms/{tenant}"

    def _fetch(self, tenant):
        r = self.http.get(f"{self.issuer(tenant)}/protocol/openid-connect/certs", timeout=10)
        r.raise_for_status()
        keys = {}
        for k in r.json().get("keys", []):
            if k.get("kty") == "RSA" and k.get("use", "sig") == "sig" and k.get("alg", "RS256") == "RS256":
                keys[k.get("kid")] = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(k))
        return keys

    def key(self, tenant, kid):
        with self.lock:
            fetched, keys = self.cache.get(tenant, (0, {}))
            if kid in keys:
                return keys[kid]
            if time.time() - fetched < 5:
                return None
            try:
                keys = self._fetch(tenant)
            except Exception as e:
                log(f"JWKS fetch for tenant {tenant} failed: {type(e).__name__}")
                self.cache[tenant] = (time.time(), keys)
                return None
            self.cache[tenant] = (time.time(), keys)
            return keys.get(kid)

    def verify(self, token, tenant):
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("AKV10000: The token is malformed.")
        if header.get("alg") != "RS256":
            raise InvalidToken(f"AKV10021: The token algorithm {header.get('alg')!r} is not accepted.")
        key = self.key(tenant, header.get("kid"))
        if key is None:
            raise InvalidToken("AKV10022: Invalid token signature: the signing key is not in the tenant's keys.")
        try:
            return jwt.decode(token, key, algorithms=["RS256"], audience=VAULT_RESOURCE,
                              issuer=self.issuer(tenant), leeway=self.leeway,
                              options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise InvalidToken("AKV10022: Invalid token: the token has expired.")
        except jwt.InvalidAudienceError:
            raise InvalidToken(f"AKV10022: Invalid audience. Expected {VAULT_RESOURCE}.")
        except jwt.InvalidIssuerError:
            raise InvalidToken(f"AKV10032: Invalid issuer. Expected one of {self.issuer(tenant)}.")
        except jwt.InvalidSignatureError:
            raise InvalidToken("AKV10022: Invalid token signature.")
        except jwt.PyJWTError as e:
            raise InvalidToken(f"AKV10022: Invalid token: {type(e).__name__}.")


# --- stats and faults -------------------------------------------------------------------------
class Stats:
    COUNTERS = ("requests", "reads", "writes", "lists", "unauthorized", "faulted", "not_found", "errors")

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.since = time.time()
            self.vaults = {}
            self.totals = dict.fromkeys(self.COUNTERS, 0)

    def _v(self, vault):
        v = self.vaults.get(vault)
        if v is None:
            v = self.vaults[vault] = dict(dict.fromkeys(self.COUNTERS, 0),
                                          **{"objects": {k: {} for k in KINDS}})
        return v

    def add(self, vault, counter, kind=None, name=None):
        with self.lock:
            v = self._v(vault)
            v[counter] += 1
            self.totals[counter] += 1
            if counter == "reads" and kind:
                v["objects"][kind][name] = v["objects"][kind].get(name, 0) + 1

    def snapshot(self):
        with self.lock:
            return json.loads(json.dumps({"since": self.since, "vaults": self.vaults, "totals": self.totals}))


class Faults:
    CODES = {
        "429": ("Throttled", "Request was not processed because too many requests were received. "
                             "Reason: VaultRequestTypeLimitReached"),
        "500": ("InternalServerError", "An unexpected error occurred (injected by the stand-in)."),
        "503": ("ServiceUnavailable", "The service is temporarily unavailable (injected by the stand-in)."),
    }

    def __init__(self):
        self.lock = threading.Lock()
        self.cfg = {"mode": "none", "retry_after": None, "count": None, "vault": None}

    def set(self, body):
        mode = str(body.get("mode", "none"))
        if mode not in ("none",) + tuple(self.CODES):
            raise ApiError(400, "BadParameter", "mode must be none, 429, 500 or 503")
        ra, count = body.get("retry_after"), body.get("count")
        if ra is not None and (not isinstance(ra, (int, float)) or ra < 0):
            raise ApiError(400, "BadParameter", "retry_after must be a number of seconds")
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ApiError(400, "BadParameter", "count must be a positive integer")
        with self.lock:
            self.cfg = {"mode": mode, "retry_after": ra, "count": count, "vault": body.get("vault")}
            return dict(self.cfg)

    def get(self):
        with self.lock:
            return dict(self.cfg)

    def take(self, vault):
        with self.lock:
            c = self.cfg
            if c["mode"] == "none" or (c["vault"] and c["vault"] != vault):
                return None
            mode, ra = c["mode"], c["retry_after"]
            if c["count"] is not None:
                c["count"] -= 1
                if c["count"] <= 0:
                    self.cfg = {"mode": "none", "retry_after": None, "count": None, "vault": None}
        code, msg = self.CODES[mode]
        headers = {}
        if ra is not None or mode == "429":
            headers["Retry-After"] = str(int(ra if ra is not None else 1))
        return ApiError(int(mode), code, msg, headers)


# --- the application ----------------------------------------------------------------------------
class App:
    def __init__(self, args):
        self.args = args
        self.host = args.host
        self.store = Store(args.state_file)
        self.verifier = Verifier(args.keycloak_url, args.ca_file, args.leeway)
        self.stats = Stats()
        self.faults = Faults()
        self.authority = args.authority.rstrip("/")
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(args.cert, args.key)
        self.servers = {}  # vault -> server
        self.main = None

    def base_url(self):
        return f"https://{self.host}:{self.main.server_address[1]}"

    def vault_url(self, vault):
        return f"https://{self.host}:{self.store.vaults[vault]['port']}"

    # listeners
    def listen(self, port, vault=None):
        srv = TLSServer((self.host, port), Handler, self, vault)
        threading.Thread(target=srv.serve_forever, name=f"vault-{vault or 'main'}", daemon=True).start()
        return srv

    def open_vault_listener(self, vault, port=None):
        if port:
            srv = self.listen(port, vault)
        else:
            srv = None
            for _ in range(200):
                p = random.randrange(20000, 32000)
                try:
                    srv = self.listen(p, vault)
                    break
                except OSError:
                    continue
            if srv is None:
                raise ApiError(500, "InternalServerError", "no free port for the vault")
        self.servers[vault] = srv
        return srv.server_address[1]

    # admin API
    def admin(self, method, parts, body):
        if parts == ["healthz"] and method == "GET":
            return 200, {"status": "ok", "vaults": len(self.store.vaults)}
        if parts == ["stats"] and method == "GET":
            return 200, self.stats.snapshot()
        if parts == ["stats", "reset"] and method == "POST":
            self.stats.reset()
            return 200, {"status": "reset"}
        if parts == ["faults"] and method == "GET":
            return 200, self.faults.get()
        if parts == ["faults"] and method in ("PUT", "POST"):
            return 200, self.faults.set(body or {})
        if parts == ["vaults"] and method == "GET":
            with self.store.lock:
                return 200, {"vaults": [self.vault_info(v) for v in sorted(self.store.vaults)]}
        if len(parts) == 2 and parts[0] == "vaults":
            vault = parts[1]
            check_name(vault)
            with self.store.lock:
                if method == "GET":
                    if vault not in self.store.vaults:
                        raise ApiError(404, "VaultNotFound", f"Vault {vault} does not exist.")
                    return 200, self.vault_info(vault)
                if method == "PUT":
                    tenant = (body or {}).get("tenant")
                    if not tenant or not isinstance(tenant, str):
                        raise ApiError(400, "BadParameter", "tenant is required")
                    created = vault not in self.store.vaults
                    if created:
                        port = self.open_vault_listener(vault, (body or {}).get("port"))
                        self.store.vaults[vault] = {"tenant": tenant, "port": port,
                                                    **{k: {} for k in KINDS}}
                    else:
                        self.store.vaults[vault]["tenant"] = tenant
                    self.store.save()
                    log(f"admin: vault {vault} {'created' if created else 'updated'} (tenant {tenant}, "
                        f"port {self.store.vaults[vault]['port']})")
                    return (201 if created else 200), self.vault_info(vault)
                if method == "DELETE":
                    if vault in self.store.vaults:
                        del self.store.vaults[vault]
                        self.store.save()
                        srv = self.servers.pop(vault, None)
                        if srv:
                            threading.Thread(target=lambda: (srv.shutdown(), srv.server_close()),
                                             daemon=True).start()
                    return 200, {"status": "deleted"}
        raise ApiError(404, "NotFound", "No such admin endpoint.")

    def vault_info(self, vault):
        v = self.store.vaults[vault]
        return {"name": vault, "tenant": v["tenant"], "port": v["port"], "url": self.vault_url(vault),
                "path_url": f"{self.base_url()}/{vault}",
                "counts": {k: len(v[k]) for k in KINDS}}


class TLSServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, handler, app, vault):
        self.app, self.vault = app, vault
        super().__init__(addr, handler)

    def process_request_thread(self, request, client_address):
        # TLS handshake in the worker thread, so one slow client cannot stall accept().
        try:
            request.settimeout(30)
            request = self.app.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            try:
                request.close()
            except OSError:
                pass
            return
        super().process_request_thread(request, client_address)


# --- request handling -----------------------------------------------------------------------------
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def version_string(self):
        return "keywire-keyvault-standin"
    timeout = 120

    def log_message(self, fmt, *args):  # the default logs the request line; we log our own
        pass

    def do_GET(self):
        self.handle_any("GET")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_POST(self):
        self.handle_any("POST")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def handle_any(self, method):
        app = self.server.app
        t0 = time.monotonic()
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        parts = [urllib.parse.unquote(p) for p in url.path.split("/")]
        parts = [p for p in parts[1:]]
        while parts and parts[-1] == "":
            parts.pop()
        vault, status, label = self.server.vault, 500, "-"
        try:
            raw = self.read_body()
            if self.server.vault is None and parts[:1] == ["_standin"]:
                label = "admin"
                if not ipaddress.ip_address(self.client_address[0]).is_loopback:
                    raise ApiError(403, "Forbidden", "The admin API is for loopback clients only.")
                status, body = app.admin(method, parts[1:], self.json_body(raw))
                self.send_json(status, body)
                return
            if self.server.vault is None:
                if not parts:
                    raise ApiError(404, "NotFound", "No vault in the path.")
                vault, parts = parts[0], parts[1:]
                vault_url = f"{app.base_url()}/{vault}"
            else:
                vault_url = None
            label = vault
            status = self.data_plane(app, method, vault, vault_url, parts, query, raw)
        except ApiError as e:
            status = e.status
            if label not in ("-", "admin") and e.status >= 400:
                app.stats.add(vault, "errors" if e.status not in (401, 404) else
                              ("unauthorized" if e.status == 401 else "not_found"))
            self.send_error_json(e)
        except (ConnectionError, TimeoutError, ssl.SSLError):
            self.close_connection = True
            return
        except Exception as e:  # a bug in the stand-in: answer 500, keep serving
            status = 500
            log(f"internal error: {type(e).__name__}: {e}")
            self.send_error_json(ApiError(500, "InternalServerError", "The stand-in failed."))
        finally:
            log(f"{label} {method} {url.path} -> {status} {int((time.monotonic() - t0) * 1000)}ms")

    def json_body(self, raw):
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, "BadParameter", "The request body is not valid JSON.")

    def data_plane(self, app, method, vault, vault_url, parts, query, raw):
        fault = app.faults.take(vault)
        if fault is not None:
            app.stats.add(vault, "requests")
            app.stats.add(vault, "faulted")
            raise fault
        with app.store.lock:
            v = app.store.vaults.get(vault)
            tenant = v["tenant"] if v else None
            if v is not None and vault_url is None:
                vault_url = app.vault_url(vault)
        if v is None:
            raise ApiError(404, "VaultNotFound", f"The vault {vault} does not exist in this stand-in.")
        app.stats.add(vault, "requests")
        self.authenticate(app, tenant)
        api = (query.get("api-version") or [None])[0]
        if not api:
            raise ApiError(400, "BadParameter", "The 'api-version' query parameter is missing.")
        if not API_VERSION_RE.match(api):
            raise ApiError(400, "BadParameter", f"The specified version ({api}) is not recognized.")
        body = self.json_body(raw) if method in ("PUT", "POST", "PATCH") else None
        ops = Ops(app, vault, vault_url)
        status, out, counter = ops.route(method, parts, body)
        if counter:
            app.stats.add(vault, *counter)
        self.send_json(status, out)
        return status

    def authenticate(self, app, tenant):
        challenge = f'Bearer authorization="{app.authority}/{tenant}", resource="{VAULT_RESOURCE}"'
        auth = self.headers.get("Authorization") or ""
        if not auth[:7].lower() == "bearer " or not auth[7:].strip():
            raise ApiError(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.",
                           {"WWW-Authenticate": challenge})
        try:
            app.verifier.verify(auth[7:].strip(), tenant)
        except InvalidToken as e:
            raise ApiError(401, "Unauthorized", str(e),
                           {"WWW-Authenticate": challenge + ', error="invalid_token"'})

    def send_json(self, status, body, headers=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        self.send_header("x-ms-keyvault-service-version", "1.9.0.0-standin")
        for k, val in (headers or {}).items():
            self.send_header(k, val)
        self.end_headers()
        self.wfile.write(data)

    def send_error_json(self, e):
        err = {"code": e.code, "message": e.message}
        if e.inner:
            err["innererror"] = {"code": e.inner}
        self.send_json(e.status, {"error": err}, e.headers)


# --- the data-plane operations ----------------------------------------------------------------------
class Ops:
    NOT_FOUND = {"secrets": ("SecretNotFound", "A secret"), "keys": ("KeyNotFound", "A key"),
                 "certificates": ("CertificateNotFound", "A certificate")}

    def __init__(self, app, vault, vault_url):
        self.app, self.store, self.vault, self.url = app, app.store, vault, vault_url

    @property
    def v(self):
        return self.store.vaults[self.vault]

    def not_found(self, kind, name, version=None):
        code, what = self.NOT_FOUND[kind]
        nid = f"{name}/{version}" if version else name
        return ApiError(404, code, f"{what} with (name/id) {nid} was not found in this key vault. If you "
                                   f"recently deleted this {what[2:]} you may be able to recover it using "
                                   f"the correct recovery command. {FWLINK}")

    def lookup(self, kind, name, version=None):
        obj = self.v[kind].get(name)
        if obj is None or not obj["order"]:
            raise self.not_found(kind, name, version)
        if not version:
            version = obj["order"][-1]
        rec = obj["versions"].get(version)
        if rec is None:
            raise self.not_found(kind, name, version)
        return version, rec

    def add_version(self, kind, name, version, rec):
        obj = self.v[kind].setdefault(name, {"order": [], "versions": {}})
        obj["versions"][version] = rec
        obj["order"].append(version)

    def route(self, method, parts, body):
        """-> (status, body, stats counter args or None)"""
        if not parts or parts[0] not in KINDS:
            raise ApiError(404, "NotFound", "The requested resource was not found.")
        kind, rest = parts[0], parts[1:]
        with self.store.lock:
            if not rest:
                if method != "GET":
                    raise ApiError(405, "MethodNotAllowed", "The method is not allowed.")
                return 200, self.list_objects(kind), ("lists",)
            name = rest[0]
            check_name(name)
            sub = rest[1] if len(rest) > 1 else None
            if len(rest) > 2:
                raise ApiError(404, "NotFound", "The requested resource was not found.")
            if method == "GET":
                if sub == "versions":
                    return 200, self.list_versions(kind, name), ("lists",)
                if kind == "certificates" and sub == "policy":
                    _, rec = self.lookup(kind, name)
                    return 200, self.render_policy(name, rec["policy"]), ("reads", kind, name)
                if sub is not None and not VERSION_RE.match(sub):
                    raise self.not_found(kind, name, sub)
                version, rec = self.lookup(kind, name, sub)
                if kind == "secrets" and not rec["attributes"].get("enabled", True):
                    raise ApiError(403, "Forbidden", "Operation get is not allowed on a disabled secret.",
                                   inner="SecretDisabled")
                return 200, self.render(kind, name, version, rec), ("reads", kind, name)
            if kind == "secrets" and method == "PUT" and sub is None:
                return 200, self.set_secret(name, body or {}), ("writes",)
            if kind == "secrets" and method == "PATCH":
                return 200, self.update_secret(name, sub, body or {}), ("writes",)
            if kind == "certificates" and method == "POST" and sub == "import":
                return 200, self.import_certificate(name, body or {}), ("writes",)
            if kind == "keys" and method == "POST" and sub == "create":
                return 200, self.create_key(name, body or {}), ("writes",)
            if kind == "keys" and method == "PUT" and sub is None:
                return 200, self.import_key(name, body or {}), ("writes",)
            if method == "DELETE" and sub is None:
                return 200, self.delete(kind, name), ("writes",)
        raise ApiError(405, "MethodNotAllowed", "The method is not allowed.")

    # attributes
    @staticmethod
    def new_attributes(given, extra=None):
        t = now()
        a = {"enabled": True}
        for k in ("enabled", "nbf", "exp"):
            if isinstance(given, dict) and given.get(k) is not None:
                a[k] = given[k]
        a.update(extra or {})
        a.update({"created": t, "updated": t})
        return a

    @staticmethod
    def out_attributes(a):
        return dict(a, **RECOVERY)

    # rendering
    def sid(self, name, version=None):
        return f"{self.url}/secrets/{name}" + (f"/{version}" if version else "")

    def kid(self, name, version=None):
        return f"{self.url}/keys/{name}" + (f"/{version}" if version else "")

    def cid(self, name, version=None):
        return f"{self.url}/certificates/{name}" + (f"/{version}" if version else "")

    def render(self, kind, name, version, rec, item=False):
        if kind == "secrets":
            out = {"id": self.sid(name, None if item == "latest" else version),
                   "attributes": self.out_attributes(rec["attributes"])}
            if not item:
                out["value"] = rec["value"]
            if rec.get("contentType") is not None:
                out["contentType"] = rec["contentType"]
            if rec.get("kid_version"):  # a certificate's secret: kid in this request's URL form
                out["kid"] = self.kid(name, rec["kid_version"])
            if rec.get("managed"):
                out["managed"] = True
            if rec.get("tags"):
                out["tags"] = rec["tags"]
            return out
        if kind == "keys":
            kid = self.kid(name, None if item == "latest" else version)
            if item:
                out = {"kid": kid, "attributes": self.out_attributes(rec["attributes"])}
            else:
                jwk = dict(rec["jwk"], kid=kid, key_ops=rec["key_ops"])
                out = {"key": jwk, "attributes": self.out_attributes(rec["attributes"])}
            if rec.get("managed"):
                out["managed"] = True
            if rec.get("tags"):
                out["tags"] = rec["tags"]
            return out
        out = {"id": self.cid(name, None if item == "latest" else version), "x5t": rec["x5t"],
               "attributes": self.out_attributes(rec["attributes"])}
        if rec.get("tags"):
            out["tags"] = rec["tags"]
        if not item:
            out.update({"kid": self.kid(name, version), "sid": self.sid(name, version), "cer": rec["cer"],
                        "policy": self.render_policy(name, rec["policy"])})
        return out

    def render_policy(self, name, policy):
        return dict(policy, id=f"{self.cid(name)}/policy")

    def list_objects(self, kind):
        items = []
        for name in sorted(self.v[kind]):
            obj = self.v[kind][name]
            if obj["order"]:
                items.append(self.render(kind, name, obj["order"][-1], obj["versions"][obj["order"][-1]],
                                         item="latest"))
        return {"value": items, "nextLink": None}

    def list_versions(self, kind, name):
        obj = self.v[kind].get(name)
        items = []
        if obj:
            items = [self.render(kind, name, ver, obj["versions"][ver], item=True) for ver in obj["order"]]
        return {"value": items, "nextLink": None}

    # secrets
    def set_secret(self, name, body):
        value = body.get("value")
        if not isinstance(value, str):
            raise ApiError(400, "BadParameter", "Property value is required.")
        if len(value.encode()) > 25 * 1024:
            raise ApiError(400, "BadParameter", "The secret value exceeds the 25 KB limit.")
        existing = self.v["secrets"].get(name)
        if existing and existing["order"] and existing["versions"][existing["order"][-1]].get("managed"):
            raise ApiError(409, "Conflict", f"Secret {name} is managed by certificate {name}; "
                                            f"import a new certificate version instead.")
        version = new_version()
        rec = {"value": value, "attributes": self.new_attributes(body.get("attributes"))}
        if body.get("contentType") is not None:
            rec["contentType"] = body["contentType"]
        if body.get("tags"):
            rec["tags"] = body["tags"]
        self.add_version("secrets", name, version, rec)
        self.store.save()
        return self.render("secrets", name, version, rec)

    def update_secret(self, name, version, body):
        version, rec = self.lookup("secrets", name, version)
        attrs = body.get("attributes") or {}
        for k in ("enabled", "nbf", "exp"):
            if k in attrs:
                rec["attributes"][k] = attrs[k]
        if "contentType" in body:
            rec["contentType"] = body["contentType"]
        if "tags" in body:
            rec["tags"] = body["tags"] or {}
        rec["attributes"]["updated"] = now()
        self.store.save()
        out = self.render("secrets", name, version, rec)
        out.pop("value", None)
        return out

    def delete(self, kind, name):
        version, rec = self.lookup(kind, name)
        if kind != "certificates" and rec.get("managed"):
            raise ApiError(403, "Forbidden", f"This {kind[:-1]} is managed by certificate {name}; "
                                             f"delete the certificate instead.")
        out = self.render(kind, name, version, rec)
        out.pop("value", None)
        del self.v[kind][name]
        if kind == "certificates":
            self.v["secrets"].pop(name, None)
            self.v["keys"].pop(name, None)
        self.store.save()
        return out

    # keys
    def create_key(self, name, body):
        kty = body.get("kty")
        if kty in ("RSA", "RSA-HSM"):
            size = body.get("key_size") or 2048
            if size not in (2048, 3072, 4096):
                raise ApiError(400, "BadParameter", f"Key size {size} is not supported.")
            key = rsa.generate_private_key(public_exponent=body.get("public_exponent") or 65537, key_size=size)
            default_ops = RSA_OPS
        elif kty in ("EC", "EC-HSM"):
            crv = body.get("crv") or "P-256"
            if crv not in CURVES:
                raise ApiError(400, "BadParameter", f"Curve {crv} is not supported.")
            key = ec.generate_private_key(CURVES[crv]())
            default_ops = EC_OPS
        else:
            raise ApiError(400, "BadParameter", f"Key type {kty!r} is not supported by the stand-in.")
        self.check_unmanaged("keys", name)
        jwk = dict(public_jwk(key), kty=kty)
        return self.store_key(name, jwk, {"pem": private_pem(key)}, body.get("key_ops") or default_ops, body)

    def import_key(self, name, body):
        pub, priv = jwk_from_import(body.get("key"))
        self.check_unmanaged("keys", name)
        ops = (body.get("key") or {}).get("key_ops") or (RSA_OPS if pub["kty"].startswith("RSA") else EC_OPS)
        return self.store_key(name, pub, {"jwk": priv} if priv else {}, ops, body)

    def store_key(self, name, jwk, private, ops, body, version=None, managed=False):
        version = version or new_version()
        rec = {"jwk": jwk, "private": private, "key_ops": list(ops),
               "attributes": self.new_attributes(body.get("attributes"))}
        if body.get("tags"):
            rec["tags"] = body["tags"]
        if managed:
            rec["managed"] = True
        self.add_version("keys", name, version, rec)
        self.store.save()
        return self.render("keys", name, version, rec)

    def check_unmanaged(self, kind, name):
        obj = self.v[kind].get(name)
        if obj and obj["order"] and obj["versions"][obj["order"][-1]].get("managed"):
            raise ApiError(409, "Conflict", f"{kind[:-1].capitalize()} {name} is managed by a certificate.")

    # certificates
    def import_certificate(self, name, body):
        kind, key, certs, stored = parse_certificate(body.get("value"), body.get("pwd"))
        policy_in = body.get("policy") or {}
        ct = ((policy_in.get("secret_props") or {}).get("contentType")
              or ("application/x-pem-file" if kind == "pem" else "application/x-pkcs12"))
        if (ct == "application/x-pem-file") != (kind == "pem"):
            raise ApiError(400, "BadParameter", f"The certificate content does not match the policy's "
                                                f"content type {ct}.")
        for k in ("secrets", "keys"):
            obj = self.v[k].get(name)
            if obj and obj["order"] and not obj["versions"][obj["order"][-1]].get("managed"):
                raise ApiError(409, "Conflict", f"A {k[:-1]} named {name} already exists and is not "
                                                f"managed by a certificate.")
        leaf = certs[0]
        der = leaf.public_bytes(serialization.Encoding.DER)
        version = new_version()
        attrs = self.new_attributes(body.get("attributes"), {
            "nbf": int(leaf.not_valid_before_utc.timestamp()),
            "exp": int(leaf.not_valid_after_utc.timestamp())})
        rec = {"cer": base64.b64encode(der).decode(), "x5t": b64u(hashlib.sha1(der).digest()),
               "attributes": attrs,
               "policy": cert_policy(key, leaf, ct, (policy_in.get("issuer") or {}).get("name"))}
        if body.get("tags"):
            rec["tags"] = body["tags"]
        self.add_version("certificates", name, version, rec)
        srec = {"value": stored, "contentType": ct, "kid_version": version, "managed": True,
                "attributes": dict(attrs)}
        if body.get("tags"):
            srec["tags"] = body["tags"]
        self.add_version("secrets", name, version, srec)
        ops = RSA_OPS if isinstance(key, rsa.RSAPrivateKey) else EC_OPS
        self.store_key(name, public_jwk(key), {"pem": private_pem(key)}, ops,
                       {"attributes": body.get("attributes"), "tags": body.get("tags")},
                       version=version, managed=True)
        self.store.save()
        return self.render("certificates", name, version, rec)


def main():
    p = argparse.ArgumentParser(description="Azure Key Vault stand-in (HTTPS)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="main port (admin API and /{vault} paths)")
    p.add_argument("--cert", required=True, help="serving certificate (PEM, chain allowed)")
    p.add_argument("--key", required=True, help="serving key (PEM)")
    p.add_argument("--keycloak-url", required=True, help="Keycloak base URL; realms are tenants")
    p.add_argument("--authority", required=True,
                   help="Entra-shaped authority for the 401 challenge (https://127.0.0.1:PORT)")
    p.add_argument("--ca-file", help="CA bundle to verify Keycloak's TLS certificate")
    p.add_argument("--state-file", help="persist vaults here (atomically); reloaded at start")
    p.add_argument("--leeway", type=int, default=0, help="clock skew allowed on exp/nbf (s)")
    args = p.parse_args()

    app = App(args)
    try:
        app.main = TLSServer((args.host, args.port), Handler, app, None)
    except OSError as e:
        log(f"cannot listen on {args.host}:{args.port}: {e}")
        return 1
    with app.store.lock:
        for vault, v in sorted(app.store.vaults.items()):
            try:
                app.open_vault_listener(vault, v["port"])
            except OSError as e:
                log(f"cannot listen for vault {vault} on port {v['port']}: {e}")
                return 1
    log(f"listening on https://{args.host}:{args.port} (admin: /_standin/), "
        f"{len(app.store.vaults)} vault(s) restored"
        + "".join(f"; {n} on port {v['port']}" for n, v in sorted(app.store.vaults.items())))
    try:
        app.main.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
