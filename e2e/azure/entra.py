#!/usr/bin/env python3
"""entra.py - set up Keycloak as the Entra ID stand-in for keywire's e2e suite.

A small CLI over Keycloak's admin REST API (run it with the venv python from python.sh;
only `requests` is needed). One Keycloak realm per Entra tenant, named by the tenant GUID.

  entra.py realm TENANT [--issuer URL] [--jwks-uri URL] [--idp-alias A]
                        [--assertion-audience AUD] [--access-token-lifespan S]
      Idempotent. Creates/updates the realm: events stored (CLIENT_LOGIN, CLIENT_LOGIN_ERROR,
      ...); an `oidc` identity provider for the e2e apiserver's ServiceAccount issuer that
      accepts Azure's assertion audience api://AzureADTokenExchange (clientId = that audience,
      allowClientIdAsAudience, supportsClientAssertions, JWKS from --jwks-uri, signature
      validated, fedClientAssertionMaxExp 86400, assertion reuse allowed as in Entra); the client scope literally named
      `https://vault.azure.net/.default` with an audience mapper (aud https://vault.azure.net)
      and a `tid` claim, made a realm default optional scope.
  entra.py federated-client TENANT CLIENT_ID SUBJECT [--idp-alias A]
      Idempotent (updates the subject). A `federated-jwt` client: its assertions must come from
      the identity provider (issuer) with sub == SUBJECT (system:serviceaccount:NS:SA).
  entra.py secret-client TENANT CLIENT_ID SECRET
      Idempotent (updates the secret). A `client-secret` client (service-principal flow).
  entra.py events TENANT [--client CLIENT_ID] [--type TYPE] [--max N]
      Keycloak's stored events for the realm, newest first, one JSON object per line:
      {"time", "type", "clientId", "userId", "ipAddress", "error", "details"}.
  entra.py delete-client TENANT CLIENT_ID / delete-realm TENANT

Connection settings come from the environment, falling back to $E2E_STATE_DIR/env (written by
e2e/up.sh): E2E_KEYCLOAK_URL, E2E_KEYCLOAK_ADMIN_USER, E2E_KEYCLOAK_ADMIN_PASSWORD, E2E_CA_FILE,
and for `realm` the defaults E2E_ISSUER and E2E_JWKS_URI. Never prints tokens or secrets.
"""
import argparse
import json
import os
import sys
import time

import requests

VAULT_SCOPE = "https://vault.azure.net/.default"
VAULT_AUDIENCE = "https://vault.azure.net"
AZURE_ASSERTION_AUDIENCE = "api://AzureADTokenExchange"
DEFAULT_IDP_ALIAS = "kubernetes"
EVENT_TYPES = [
    "CLIENT_LOGIN", "CLIENT_LOGIN_ERROR",
    "TOKEN_EXCHANGE", "TOKEN_EXCHANGE_ERROR",
    "INTROSPECT_TOKEN", "INTROSPECT_TOKEN_ERROR",
    "REFRESH_TOKEN", "REFRESH_TOKEN_ERROR",
]


class Fail(Exception):
    pass


def load_env():
    """Environment, with missing E2E_* values taken from $E2E_STATE_DIR/env."""
    env = dict(os.environ)
    state = env.get("E2E_STATE_DIR", "/tmp/keywire-e2e")
    path = os.path.join(state, "env")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("export "):
                    line = line[len("export "):]
                if not line or line.startswith("#") or "=" not in line:
                    continue
                k, v = line.split("=", 1)
                v = v.strip().strip("'\"")
                env.setdefault(k, v)
    return env


class Admin:
    def __init__(self, env):
        try:
            self.base = env["E2E_KEYCLOAK_URL"].rstrip("/")
            self.user = env["E2E_KEYCLOAK_ADMIN_USER"]
            self.password = env["E2E_KEYCLOAK_ADMIN_PASSWORD"]
        except KeyError as e:
            raise Fail(f"{e.args[0]} is not set (source $E2E_STATE_DIR/env)")
        self.s = requests.Session()
        self.s.trust_env = False  # loopback only; never through a proxy
        self.s.verify = env.get("E2E_CA_FILE") or True
        self._token = None
        self._token_exp = 0

    def token(self):
        if self._token and time.time() < self._token_exp - 10:
            return self._token
        r = self.s.post(
            f"{self.base}/realms/master/protocol/openid-connect/token",
            data={"grant_type": "password", "client_id": "admin-cli",
                  "username": self.user, "password": self.password},
            timeout=30,
        )
        if r.status_code != 200:
            raise Fail(f"admin login failed: HTTP {r.status_code}")
        body = r.json()
        self._token = body["access_token"]
        self._token_exp = time.time() + int(body.get("expires_in", 60))
        return self._token

    def req(self, method, path, ok=(200, 201, 204), **kw):
        r = self.s.request(method, f"{self.base}/admin/realms{path}",
                           headers={"Authorization": f"Bearer {self.token()}"}, timeout=30, **kw)
        if r.status_code not in ok:
            msg = r.text[:500] if r.headers.get("content-type", "").startswith("application/json") else ""
            raise Fail(f"{method} /admin/realms{path}: HTTP {r.status_code} {msg}")
        return r

    def get(self, path, ok=(200,)):
        r = self.req("GET", path, ok=ok + (404,))
        return None if r.status_code == 404 else r.json()


# --- realm ---------------------------------------------------------------------------------
def ensure_realm(a, tenant, args, env):
    issuer = args.issuer or env.get("E2E_ISSUER")
    jwks = args.jwks_uri or env.get("E2E_JWKS_URI") or (issuer and issuer.rstrip("/") + "/openid/v1/jwks")
    if not issuer:
        raise Fail("no issuer: pass --issuer or set E2E_ISSUER")

    realm = {
        "realm": tenant, "enabled": True,
        "accessTokenLifespan": args.access_token_lifespan,
        "eventsEnabled": True, "enabledEventTypes": EVENT_TYPES,
        "eventsListeners": ["jboss-logging"], "eventsExpiration": 86400,
        "adminEventsEnabled": False, "adminEventsDetailsEnabled": False,
    }
    if a.get(f"/{tenant}") is None:
        a.req("POST", "", json=realm)
        log(f"realm {tenant}: created")
    else:
        a.req("PUT", f"/{tenant}", json=realm)
        log(f"realm {tenant}: exists, updated")
    a.req("PUT", f"/{tenant}/events/config", json={
        "eventsEnabled": True, "enabledEventTypes": EVENT_TYPES, "eventsExpiration": 86400,
        "eventsListeners": ["jboss-logging"], "adminEventsEnabled": False,
        "adminEventsDetailsEnabled": False,
    })

    alias = args.idp_alias
    idp = {
        "alias": alias, "displayName": f"ServiceAccount issuer {issuer}",
        "providerId": "oidc", "enabled": True, "trustEmail": False, "storeToken": False,
        "hideOnLogin": True, "linkOnly": True,
        "config": {
            "issuer": issuer,
            "validateIssuer": "true",
            # Azure's assertion audience: the IdP's clientId, accepted as an audience.
            "clientId": args.assertion_audience,
            "allowClientIdAsAudience": "true",
            "clientAuthMethod": "client_secret_post",
            "clientSecret": "unused-no-browser-login",
            "supportsClientAssertions": "true",
            # Entra accepts the same federated assertion many times (a projected token file is
            # read for every token request); Keycloak refuses a reused jti unless told this.
            "supportsClientAssertionReuse": "true",
            "useJwksUrl": "true",
            "jwksUrl": jwks,
            "validateSignature": "true",
            # Default 300 s refuses a 1-hour ServiceAccount token 5 minutes after issue.
            "fedClientAssertionMaxExp": "86400",
            # Never used (no browser login); the oidc provider wants them set.
            "authorizationUrl": issuer.rstrip("/") + "/unused/authorize",
            "tokenUrl": issuer.rstrip("/") + "/unused/token",
            "syncMode": "LEGACY",
        },
    }
    if a.get(f"/{tenant}/identity-provider/instances/{alias}") is None:
        a.req("POST", f"/{tenant}/identity-provider/instances", json=idp)
        log(f"identity provider {alias} (oidc, issuer {issuer}): created")
    else:
        a.req("PUT", f"/{tenant}/identity-provider/instances/{alias}", json=idp)
        log(f"identity provider {alias} (oidc, issuer {issuer}): updated")

    scope_id = ensure_vault_scope(a, tenant)
    optional = a.get(f"/{tenant}/default-optional-client-scopes") or []
    if not any(s["id"] == scope_id for s in optional):
        a.req("PUT", f"/{tenant}/default-optional-client-scopes/{scope_id}")


def ensure_vault_scope(a, tenant):
    scopes = a.get(f"/{tenant}/client-scopes") or []
    scope = next((s for s in scopes if s["name"] == VAULT_SCOPE), None)
    if scope is None:
        a.req("POST", f"/{tenant}/client-scopes", json={
            "name": VAULT_SCOPE, "protocol": "openid-connect",
            "description": "Azure Key Vault (the keywire e2e stand-in)",
            "attributes": {"include.in.token.scope": "true", "display.on.consent.screen": "false"},
        })
        scopes = a.get(f"/{tenant}/client-scopes") or []
        scope = next(s for s in scopes if s["name"] == VAULT_SCOPE)
        log(f"client scope {VAULT_SCOPE}: created")
    sid = scope["id"]
    mappers = {m["name"]: m for m in (a.get(f"/{tenant}/client-scopes/{sid}/protocol-mappers/models") or [])}
    wanted = [
        {"name": "vault-audience", "protocol": "openid-connect", "protocolMapper": "oidc-audience-mapper",
         "config": {"included.custom.audience": VAULT_AUDIENCE, "access.token.claim": "true",
                    "id.token.claim": "false", "introspection.token.claim": "true"}},
        {"name": "tid", "protocol": "openid-connect", "protocolMapper": "oidc-hardcoded-claim-mapper",
         "config": {"claim.name": "tid", "claim.value": tenant, "jsonType.label": "String",
                    "access.token.claim": "true", "id.token.claim": "false",
                    "introspection.token.claim": "true", "userinfo.token.claim": "false"}},
    ]
    for m in wanted:
        if m["name"] in mappers:
            m = dict(m, id=mappers[m["name"]]["id"])
            a.req("PUT", f"/{tenant}/client-scopes/{sid}/protocol-mappers/models/{m['id']}", json=m)
        else:
            a.req("POST", f"/{tenant}/client-scopes/{sid}/protocol-mappers/models", json=m)
    return sid


# --- clients ---------------------------------------------------------------------------------
def find_client(a, tenant, client_id):
    found = a.req("GET", f"/{tenant}/clients", params={"clientId": client_id}).json()
    return found[0] if found else None


def ensure_client(a, tenant, client_id, auth_type, attributes=None, secret=None):
    if a.get(f"/{tenant}") is None:
        raise Fail(f"realm {tenant} does not exist (run: entra.py realm {tenant})")
    rep = {
        "clientId": client_id, "enabled": True, "protocol": "openid-connect",
        "publicClient": False, "bearerOnly": False,
        "standardFlowEnabled": False, "implicitFlowEnabled": False,
        "directAccessGrantsEnabled": False, "serviceAccountsEnabled": True,
        "fullScopeAllowed": False,  # no realm/client roles in the token (Entra's has none here)
        "clientAuthenticatorType": auth_type,
        "attributes": attributes or {},
    }
    if secret is not None:
        rep["secret"] = secret
    existing = find_client(a, tenant, client_id)
    if existing is None:
        rep["defaultClientScopes"] = ["basic"]
        rep["optionalClientScopes"] = [VAULT_SCOPE]
        a.req("POST", f"/{tenant}/clients", json=rep)
        existing = find_client(a, tenant, client_id)
        action = "created"
    else:
        merged = dict(existing)
        merged.update(rep)
        merged["attributes"] = dict(existing.get("attributes") or {}, **rep["attributes"])
        a.req("PUT", f"/{tenant}/clients/{existing['id']}", json=merged)
        action = "updated"
    # make sure the vault scope is an optional scope of the client (also for older clients)
    scopes = a.get(f"/{tenant}/client-scopes") or []
    sid = next((s["id"] for s in scopes if s["name"] == VAULT_SCOPE), None)
    if sid is None:
        raise Fail(f"realm {tenant} has no {VAULT_SCOPE} scope (run: entra.py realm {tenant})")
    optional = a.get(f"/{tenant}/clients/{existing['id']}/optional-client-scopes") or []
    if not any(s["id"] == sid for s in optional):
        a.req("PUT", f"/{tenant}/clients/{existing['id']}/optional-client-scopes/{sid}")
    return action


def cmd_federated_client(a, args):
    alias = args.idp_alias
    if a.get(f"/{args.tenant}/identity-provider/instances/{alias}") is None:
        raise Fail(f"realm {args.tenant} has no identity provider {alias} (run: entra.py realm)")
    action = ensure_client(a, args.tenant, args.client_id, "federated-jwt", attributes={
        "jwt.credential.issuer": alias, "jwt.credential.sub": args.subject,
    })
    log(f"federated client {args.client_id} (issuer {alias}, subject {args.subject}): {action}")


def cmd_secret_client(a, args):
    action = ensure_client(a, args.tenant, args.client_id, "client-secret", secret=args.secret)
    log(f"secret client {args.client_id}: {action}")


def cmd_events(a, args):
    params = {"max": args.max}
    if args.client:
        params["client"] = args.client
    if args.type:
        params["type"] = args.type
    for e in a.req("GET", f"/{args.tenant}/events", params=params).json():
        print(json.dumps({
            "time": e.get("time"), "type": e.get("type"), "clientId": e.get("clientId"),
            "userId": e.get("userId"), "ipAddress": e.get("ipAddress"),
            "error": e.get("error"), "details": e.get("details") or {},
        }, sort_keys=True))


def log(msg):
    print(f"[entra] {msg}", file=sys.stderr)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("realm")
    r.add_argument("tenant")
    r.add_argument("--issuer")
    r.add_argument("--jwks-uri")
    r.add_argument("--idp-alias", default=DEFAULT_IDP_ALIAS)
    r.add_argument("--assertion-audience", default=AZURE_ASSERTION_AUDIENCE)
    r.add_argument("--access-token-lifespan", type=int, default=300)
    f = sub.add_parser("federated-client")
    f.add_argument("tenant")
    f.add_argument("client_id")
    f.add_argument("subject")
    f.add_argument("--idp-alias", default=DEFAULT_IDP_ALIAS)
    s = sub.add_parser("secret-client")
    s.add_argument("tenant")
    s.add_argument("client_id")
    s.add_argument("secret")
    e = sub.add_parser("events")
    e.add_argument("tenant")
    e.add_argument("--client")
    e.add_argument("--type")
    e.add_argument("--max", type=int, default=100)
    dc = sub.add_parser("delete-client")
    dc.add_argument("tenant")
    dc.add_argument("client_id")
    dr = sub.add_parser("delete-realm")
    dr.add_argument("tenant")
    args = p.parse_args(argv)

    env = load_env()
    try:
        a = Admin(env)
        if args.cmd == "realm":
            ensure_realm(a, args.tenant, args, env)
        elif args.cmd == "federated-client":
            cmd_federated_client(a, args)
        elif args.cmd == "secret-client":
            cmd_secret_client(a, args)
        elif args.cmd == "events":
            cmd_events(a, args)
        elif args.cmd == "delete-client":
            c = find_client(a, args.tenant, args.client_id)
            if c:
                a.req("DELETE", f"/{args.tenant}/clients/{c['id']}")
            log(f"client {args.client_id}: {'deleted' if c else 'not found'}")
        elif args.cmd == "delete-realm":
            a.req("DELETE", f"/{args.tenant}", ok=(204, 404))
            log(f"realm {args.tenant}: deleted")
    except Fail as ex:
        log(f"ERROR: {ex}")
        return 1
    except requests.RequestException as ex:
        log(f"ERROR: {type(ex).__name__}: {ex}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
