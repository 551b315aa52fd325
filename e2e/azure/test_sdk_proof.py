"""test_sdk_proof.py - prove the Azure stand-ins with Microsoft's own Python SDKs, unmodified.

Run with the venv python after e2e/up.sh (env from $E2E_STATE_DIR/env):

    source "$E2E_STATE_DIR/env" && "$E2E_PYTHON" -m pytest -q e2e/azure/test_sdk_proof.py

The chain: a real ServiceAccount token from the e2e kube-apiserver (audience
api://AzureADTokenExchange) -> Keycloak's federated-jwt client authentication through the
Entra-shaped nginx front -> an access token for https://vault.azure.net -> the Key Vault
stand-in, which checks it against Keycloak's JWKS. The SDK calls are exactly what an
application would write; the only settings are authority= (Entra stand-in), the CA bundle and
verify_challenge_resource=False (the vault host is 127.0.0.1, not *.vault.azure.net).
Nothing here prints a token or a secret value.
"""
import base64
import datetime
import json
import os
import subprocess
import sys
import time
import uuid

import jwt
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.identity import (ClientAssertionCredential, ClientSecretCredential, DefaultAzureCredential,
                            WorkloadIdentityCredential)
from azure.keyvault.certificates import CertificateClient, CertificateContentType, CertificatePolicy
from azure.keyvault.keys import KeyClient, KeyCurveName, KeyType
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

VAULT_SCOPE = "https://vault.azure.net/.default"
VAULT_RESOURCE = "https://vault.azure.net"
AZURE_AUDIENCE = "api://AzureADTokenExchange"
HERE = os.path.dirname(os.path.abspath(__file__))


# --- environment ----------------------------------------------------------------------------------
def load_env():
    state = os.environ.get("E2E_STATE_DIR", "/tmp/keywire-e2e")
    path = os.path.join(state, "env")
    if not os.path.exists(path):
        pytest.exit(f"{path} not found: run e2e/up.sh first (E2E_STATE_DIR={state})", returncode=2)
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("export ") and "=" in line:
                k, v = line[len("export "):].split("=", 1)
                env[k] = v
    missing = [k for k in ("E2E_KEYCLOAK_URL", "E2E_ENTRA_AUTHORITY", "E2E_KEYVAULT_ADMIN", "E2E_TENANT")
               if k not in env]
    if missing:
        pytest.exit(f"{path} has no {missing}: the Azure stand-ins are not up (E2E_AZURE=0?)", returncode=2)
    return env


ENV = load_env()
CA = ENV["E2E_CA_FILE"]
AUTHORITY = ENV["E2E_ENTRA_AUTHORITY"]
TENANT = ENV["E2E_TENANT"]
KEYCLOAK = ENV["E2E_KEYCLOAK_URL"]
# azure-core's requests transport: the environment's CA bundle wins over a session's verify.
os.environ["REQUESTS_CA_BUNDLE"] = CA
os.environ["SSL_CERT_FILE"] = CA
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
for var in ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_USERNAME", "IDENTITY_ENDPOINT",
            "MSI_ENDPOINT"):
    os.environ.pop(var, None)

RAW = requests.Session()
RAW.trust_env = False
RAW.verify = CA


def sh(*args, **kw):
    p = subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)
    if p.returncode != 0:  # our helpers never print tokens or secrets; show why
        raise AssertionError(f"{os.path.basename(args[0])} {args[1:3]} exited {p.returncode}: {p.stderr[-2000:]}")
    return p.stdout


def kubectl(*args):
    return sh(ENV["KUBECTL"], "--kubeconfig", ENV["KUBECONFIG"], "--request-timeout=20s", *args)


def entra(*args):
    return sh(sys.executable, os.path.join(HERE, "entra.py"), *args,
              env=dict(os.environ, E2E_STATE_DIR=ENV["E2E_STATE_DIR"]))


def claims(token):
    return jwt.decode(token, options={"verify_signature": False})


def events(client_id):
    return [json.loads(line) for line in entra("events", TENANT, "--client", client_id).splitlines() if line]


# --- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ns():
    name = f"sdk-proof-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    # no controller-manager: ServiceAccounts must be created explicitly
    kubectl("-n", name, "create", "serviceaccount", "app")
    kubectl("-n", name, "create", "serviceaccount", "intruder")
    return name


def sa_token(ns, sa="app"):
    return kubectl("create", "token", sa, "-n", ns, "--audience", AZURE_AUDIENCE, "--duration", "1h").strip()


@pytest.fixture(scope="module")
def app(ns):
    """A federated-jwt app (client ID = a GUID, as in Entra) for system:serviceaccount:NS:app."""
    entra("realm", TENANT)  # idempotent: proves re-running it on the suite's tenant is harmless
    client_id = str(uuid.uuid4())
    entra("federated-client", TENANT, client_id, f"system:serviceaccount:{ns}:app")
    return client_id


@pytest.fixture(scope="module")
def assertion_credential(ns, app):
    return ClientAssertionCredential(TENANT, app, lambda: sa_token(ns), authority=AUTHORITY)


@pytest.fixture(scope="module")
def vault():
    name = f"kv-{uuid.uuid4().hex[:10]}"
    r = RAW.put(f"{ENV['E2E_KEYVAULT_ADMIN']}/vaults/{name}", json={"tenant": TENANT}, timeout=10)
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["url"].startswith("https://127.0.0.1:") and info["path_url"] == f"{ENV['E2E_KEYVAULT_URL']}/{name}"
    return info


def sdk(cls, vault, credential):
    return cls(vault_url=vault["url"], credential=credential, verify_challenge_resource=False)


# --- (a) federated identity: ServiceAccount token -> Keycloak through the Entra front -----------------
def test_client_assertion_credential_gets_a_vault_token(ns, app, assertion_credential):
    tok = assertion_credential.get_token(VAULT_SCOPE)
    c = claims(tok.token)
    assert c["aud"] == VAULT_RESOURCE
    assert c["azp"] == app
    assert c["iss"] == f"{KEYCLOAK}/realms/{TENANT}"
    assert c["tid"] == TENANT
    assert tok.expires_on > time.time() + 60
    # Keycloak's own record of validating the ServiceAccount assertion
    ok = [e for e in events(app) if e["type"] == "CLIENT_LOGIN"]
    assert ok, "no CLIENT_LOGIN event"
    d = ok[0]["details"]
    assert d["client_assertion_sub"] == f"system:serviceaccount:{ns}:app"
    assert d["client_assertion_issuer"] == ENV["E2E_ISSUER"]
    assert d["client_auth_method"] == "federated-jwt"
    assert d["grant_type"] == "client_credentials"
    assert d["scope"] == VAULT_SCOPE


def test_workload_identity_and_default_credential_from_azure_env(ns, app, tmp_path, monkeypatch):
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(sa_token(ns))
    monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
    monkeypatch.setenv("AZURE_CLIENT_ID", app)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", AUTHORITY)
    # Both read the same token file: the same assertion is used twice, which Entra allows
    # (the realm's identity provider has supportsClientAssertionReuse on for that).
    for cred in (WorkloadIdentityCredential(), DefaultAzureCredential()):
        c = claims(cred.get_token(VAULT_SCOPE).token)
        assert c["aud"] == VAULT_RESOURCE and c["azp"] == app


# --- (b) service principal with a client secret ------------------------------------------------------
def test_client_secret_credential():
    client_id, secret = str(uuid.uuid4()), uuid.uuid4().hex + uuid.uuid4().hex
    entra("secret-client", TENANT, client_id, secret)
    cred = ClientSecretCredential(TENANT, client_id, secret, authority=AUTHORITY, disable_instance_discovery=True)
    c = claims(cred.get_token(VAULT_SCOPE).token)
    assert c["aud"] == VAULT_RESOURCE and c["azp"] == client_id
    bad = ClientSecretCredential(TENANT, client_id, "wrong", authority=AUTHORITY, disable_instance_discovery=True)
    with pytest.raises(ClientAuthenticationError):
        bad.get_token(VAULT_SCOPE)


# --- (c) secrets ---------------------------------------------------------------------------------
def test_secret_client_set_get_versions_list(vault, assertion_credential):
    sc = sdk(SecretClient, vault, assertion_credential)
    s1 = sc.set_secret("db-password", "first-value", content_type="text/plain", tags={"app": "sdk-proof"})
    s2 = sc.set_secret("db-password", "second-value")
    assert s1.properties.version != s2.properties.version
    assert len(s1.properties.version) == 32
    assert s1.id == f"{vault['url']}/secrets/db-password/{s1.properties.version}"
    assert s1.properties.vault_url == vault["url"] and s1.name == "db-password"

    latest = sc.get_secret("db-password")
    assert latest.value == "second-value" and latest.properties.version == s2.properties.version
    old = sc.get_secret("db-password", s1.properties.version)
    assert old.value == "first-value"
    assert old.properties.content_type == "text/plain" and old.properties.tags == {"app": "sdk-proof"}
    assert old.properties.enabled is True and isinstance(old.properties.created_on, datetime.datetime)

    versions = {p.version for p in sc.list_properties_of_secret_versions("db-password")}
    assert versions == {s1.properties.version, s2.properties.version}
    assert "db-password" in {p.name for p in sc.list_properties_of_secrets()}

    with pytest.raises(ResourceNotFoundError) as e:
        sc.get_secret("no-such-secret")
    assert e.value.error.code == "SecretNotFound"

    sc.update_secret_properties("db-password", s1.properties.version, enabled=False)
    with pytest.raises(HttpResponseError) as e:
        sc.get_secret("db-password", s1.properties.version)
    assert e.value.status_code == 403


# --- (d) certificates --------------------------------------------------------------------------------
def make_cert(key, cn):
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
            .sign(key, hashes.SHA256()))


def test_certificate_import_pfx_and_pem(vault, assertion_credential):
    cc = sdk(CertificateClient, vault, assertion_credential)
    sc = sdk(SecretClient, vault, assertion_credential)
    kc = sdk(KeyClient, vault, assertion_credential)

    # PFX with a password
    rkey = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rcert = make_cert(rkey, "pfx.sdk-proof.test")
    der = rcert.public_bytes(serialization.Encoding.DER)
    pfx = pkcs12.serialize_key_and_certificates(b"tls", rkey, rcert, None,
                                                serialization.BestAvailableEncryption(b"pfx-pass"))
    imported = cc.import_certificate("tls-pfx", pfx, password="pfx-pass")
    assert imported.cer == der
    got = cc.get_certificate("tls-pfx")
    assert bytes(got.cer) == der
    assert got.properties.version == imported.properties.version
    assert got.policy.content_type == CertificateContentType.pkcs12
    assert got.properties.x509_thumbprint == rcert.fingerprint(hashes.SHA1())
    assert got.secret_id == f"{vault['url']}/secrets/tls-pfx/{got.properties.version}"
    backing = sc.get_secret("tls-pfx")
    assert backing.properties.content_type == "application/x-pkcs12"
    assert backing.properties.managed is True and backing.properties.key_id == got.key_id
    k, c, _ = pkcs12.load_key_and_certificates(base64.b64decode(backing.value), None)  # stored without password
    assert c.public_bytes(serialization.Encoding.DER) == der
    assert k.private_numbers() == rkey.private_numbers()
    key = kc.get_key("tls-pfx")
    assert key.id == got.key_id
    assert int.from_bytes(key.key.n, "big") == rkey.public_key().public_numbers().n

    # PEM (key + certificate), EC
    ekey = ec.generate_private_key(ec.SECP256R1())
    ecert = make_cert(ekey, "pem.sdk-proof.test")
    pem = (ekey.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
           + ecert.public_bytes(serialization.Encoding.PEM))
    policy = CertificatePolicy(issuer_name="Unknown", subject="CN=pem.sdk-proof.test",
                               content_type=CertificateContentType.pem)
    cc.import_certificate("tls-pem", pem, policy=policy)
    cc.import_certificate("tls-pem", pem, policy=policy)  # a second version
    got = cc.get_certificate("tls-pem")
    assert bytes(got.cer) == ecert.public_bytes(serialization.Encoding.DER)
    assert got.policy.content_type == CertificateContentType.pem
    assert got.policy.key_curve_name == KeyCurveName.p_256
    assert len(list(cc.list_properties_of_certificate_versions("tls-pem"))) == 2
    backing = sc.get_secret("tls-pem")
    assert backing.properties.content_type == "application/x-pem-file"
    assert backing.value == pem.decode()
    assert {p.name for p in cc.list_properties_of_certificates()} >= {"tls-pfx", "tls-pem"}


# --- (e) keys --------------------------------------------------------------------------------------------
def test_key_client_create_get(vault, assertion_credential):
    kc = sdk(KeyClient, vault, assertion_credential)
    r = kc.create_rsa_key("signing-rsa", size=3072)
    assert r.key_type == KeyType.rsa and len(r.key.n) == 384 and r.key.d is None
    e = kc.create_ec_key("signing-ec", curve=KeyCurveName.p_384)
    assert e.key_type == KeyType.ec and e.key.crv == KeyCurveName.p_384 and len(e.key.x) == 48
    got = kc.get_key("signing-rsa")
    assert got.id == r.id and got.key.n == r.key.n and got.key.e == r.key.e
    got = kc.get_key("signing-ec", e.properties.version)
    assert (got.key.x, got.key.y) == (e.key.x, e.key.y)
    kc.create_ec_key("signing-ec", curve=KeyCurveName.p_256)
    assert len(list(kc.list_properties_of_key_versions("signing-ec"))) == 2
    # imported private JWK: only the public half ever comes back
    from azure.keyvault.keys import JsonWebKey
    priv = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()
    i = lambda n: n.to_bytes((n.bit_length() + 7) // 8, "big")
    imported = kc.import_key("imported", JsonWebKey(
        kty="RSA", n=i(priv.public_numbers.n), e=i(priv.public_numbers.e), d=i(priv.d), p=i(priv.p),
        q=i(priv.q), dp=i(priv.dmp1), dq=i(priv.dmq1), qi=i(priv.iqmp)))
    assert imported.key.d is None and kc.get_key("imported").key.d is None


# --- (f) the bearer challenge -----------------------------------------------------------------------------
def test_unauthenticated_request_gets_the_challenge(vault):
    r = RAW.get(f"{vault['url']}/secrets/anything", params={"api-version": "7.6"}, timeout=10)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == \
        f'Bearer authorization="{AUTHORITY}/{TENANT}", resource="{VAULT_RESOURCE}"'
    assert r.json()["error"]["code"] == "Unauthorized"


# --- (g) refused identities and tokens ----------------------------------------------------------------------
def test_assertion_for_another_service_account_is_refused_by_keycloak(ns, app):
    cred = ClientAssertionCredential(TENANT, app, lambda: sa_token(ns, "intruder"), authority=AUTHORITY)
    with pytest.raises(ClientAuthenticationError) as e:
        cred.get_token(VAULT_SCOPE)
    assert "invalid_client" in str(e.value)
    errs = [ev for ev in events(app) if ev["type"] == "CLIENT_LOGIN_ERROR"]
    assert any(ev["details"].get("client_assertion_sub") == f"system:serviceaccount:{ns}:intruder"
               and ev["error"] == "invalid_client_credentials" for ev in errs), errs


def bad_request(vault, token):
    return RAW.get(f"{vault['url']}/secrets/anything", params={"api-version": "7.6"},
                   headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_foreign_key_wrong_audience_and_wrong_issuer_are_refused_by_the_standin(ns, vault, assertion_credential):
    challenge = f'Bearer authorization="{AUTHORITY}/{TENANT}", resource="{VAULT_RESOURCE}", error="invalid_token"'
    real = claims(assertion_credential.get_token(VAULT_SCOPE).token)
    # same claims as a real token, signed by a key that is not in the realm's JWKS
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(real, foreign, algorithm="RS256", headers={"kid": "not-keycloaks"})
    # a genuine Keycloak token without the vault audience (no vault scope requested)
    client_id, secret = str(uuid.uuid4()), uuid.uuid4().hex
    entra("secret-client", TENANT, client_id, secret)
    r = RAW.post(f"{AUTHORITY}/{TENANT}/oauth2/v2.0/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
    assert r.status_code == 200
    no_vault_aud = r.json()["access_token"]
    assert VAULT_RESOURCE not in (claims(no_vault_aud).get("aud") or [])
    # a ServiceAccount token: valid JWT, wrong issuer and audience
    for name, token in (("foreign key", forged), ("wrong audience", no_vault_aud),
                        ("wrong issuer", sa_token(ns))):
        resp = bad_request(vault, token)
        assert resp.status_code == 401, name
        assert resp.headers["WWW-Authenticate"] == challenge, name
    # and the SDK surfaces it as an authentication error with such a credential
    class Fixed:
        def get_token(self, *scopes, **kw):
            from azure.core.credentials import AccessToken
            return AccessToken(forged, int(time.time()) + 300)
    with pytest.raises(ClientAuthenticationError):
        sdk(SecretClient, vault, Fixed()).get_secret("anything")


# --- stand-in admin API: stats, faults, persistence ----------------------------------------------------------
def admin(method, path, **kw):
    r = RAW.request(method, f"{ENV['E2E_KEYVAULT_ADMIN']}{path}", timeout=10, **kw)
    assert r.status_code in (200, 201), r.text
    return r.json()


def test_stats_count_reads_per_object(vault, assertion_credential):
    sc = sdk(SecretClient, vault, assertion_credential)
    sc.set_secret("counted", "v")
    admin("POST", "/stats/reset")
    for _ in range(3):
        sc.get_secret("counted")
    sdk(KeyClient, vault, assertion_credential).create_rsa_key("counted-key")
    st = admin("GET", "/stats")["vaults"][vault["name"]]
    assert st["objects"]["secrets"] == {"counted": 3}
    assert st["reads"] == 3 and st["writes"] == 1


def test_sdk_retries_through_injected_throttling_and_outages(vault, assertion_credential):
    sc = sdk(SecretClient, vault, assertion_credential)
    sc.set_secret("under-fire", "still-here")
    admin("POST", "/stats/reset")
    admin("PUT", "/faults", json={"mode": "429", "retry_after": 1, "count": 2, "vault": vault["name"]})
    t0 = time.monotonic()
    assert sc.get_secret("under-fire").value == "still-here"
    assert time.monotonic() - t0 >= 1.5  # honoured Retry-After twice
    assert admin("GET", "/stats")["vaults"][vault["name"]]["faulted"] == 2
    admin("PUT", "/faults", json={"mode": "503", "count": 1})
    r = RAW.get(f"{vault['url']}/secrets/under-fire", params={"api-version": "7.6"}, timeout=10)
    assert r.status_code == 503 and r.json()["error"]["code"] == "ServiceUnavailable"
    assert admin("GET", "/faults")["mode"] == "none"


def test_state_survives_a_standin_restart(vault, assertion_credential):
    sc = sdk(SecretClient, vault, assertion_credential)
    v = sc.set_secret("durable", "kept-across-restart")
    sh(os.path.join(HERE, "standin.sh"), "kill", env=dict(os.environ, E2E_STATE_DIR=ENV["E2E_STATE_DIR"]))
    with pytest.raises(Exception):
        RAW.get(f"{vault['url']}/secrets/durable", params={"api-version": "7.6"}, timeout=2)
    sh(os.path.join(HERE, "standin.sh"), "start", env=dict(os.environ, E2E_STATE_DIR=ENV["E2E_STATE_DIR"]))
    got = sc.get_secret("durable")  # same vault URL (port) and data
    assert got.value == "kept-across-restart" and got.properties.version == v.properties.version


def test_path_addressed_vault_alias_for_raw_rest(vault, assertion_credential):
    token = assertion_credential.get_token(VAULT_SCOPE).token
    sdk(SecretClient, vault, assertion_credential).set_secret("by-path", "same-store")
    r = RAW.get(f"{vault['path_url']}/secrets/by-path", params={"api-version": "7.6"},
                headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["value"] == "same-store" and body["id"].startswith(f"{vault['path_url']}/secrets/by-path/")
    r = RAW.get(f"{ENV['E2E_KEYVAULT_URL']}/no-such-vault/secrets/x", params={"api-version": "7.6"}, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "VaultNotFound"
