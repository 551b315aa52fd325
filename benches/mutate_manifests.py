"""The manifests the `keywire mutate` benchmarks read (run-mutate-scale.sh,
run-mutate-instructions.sh): the ServiceAccount of --cluster-state, and opted-in Deployments,
Pods and ConfigMaps in the style of docs/annotations.md."""

STATE = """apiVersion: v1
kind: ServiceAccount
metadata:
  name: orders
  namespace: shop
  annotations:
    azure.workload.identity/client-id: 11111111-2222-3333-4444-555555555555
    azure.workload.identity/tenant-id: aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee
"""


def deployment(i):
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: orders-{i}
  namespace: shop
  labels:
    app: orders-{i}
spec:
  replicas: 2
  selector:
    matchLabels:
      app: orders-{i}
  template:
    metadata:
      labels:
        app: orders-{i}
        keywire.dev/inject: "true"
      annotations:
        keywire.dev/keyvault: orders-kv
        keywire.dev/objects: secret/db-password, secret/api-key as API_KEY, cert/tls@3f2a
        keywire.dev/env: DB_PASSWORD=db-password, API_KEY=API_KEY
    spec:
      serviceAccountName: orders
      containers:
        - name: api
          image: registry.example/orders:1.{i % 50}
          ports:
            - containerPort: 8080
          env:
            - name: MODE
              value: "on"
          resources:
            requests: {{cpu: 100m, memory: 128Mi}}
          volumeMounts:
            - name: config
              mountPath: /etc/orders
      volumes:
        - name: config
          configMap:
            name: orders-{i}
            defaultMode: 0644
"""


def container(c):
    return f"""    - name: app-{c}
      image: registry.example.com/team/app-{c}:1.2.3
      ports:
        - containerPort: {8080 + c}
      env:
        - name: LOG_LEVEL
          value: info
      resources:
        requests: {{cpu: 100m, memory: 128Mi}}
      volumeMounts:
        - name: config
          mountPath: /etc/app
"""

def pod(i, containers):
    return f"""apiVersion: v1
kind: Pod
metadata:
  name: web-{i}
  namespace: shop
  labels:
    app: web
    keywire.dev/inject: "true"
  annotations:
    keywire.dev/keyvault: kv-demo
    keywire.dev/objects: secret/db-password, secret/api-key as api
    keywire.dev/env: DB_PASSWORD=db-password
spec:
  serviceAccountName: orders
  containers:
{"".join(container(c) for c in range(containers))}  volumes:
    - name: config
      configMap:
        name: web-config
"""


def pod(i, containers):
    return f"""apiVersion: v1
kind: Pod
metadata:
  name: web-{i}
  namespace: shop
  labels:
    app: web
    keywire.dev/inject: "true"
  annotations:
    keywire.dev/keyvault: kv-demo
    keywire.dev/objects: secret/db-password, secret/api-key as api
    keywire.dev/env: DB_PASSWORD=db-password
spec:
  serviceAccountName: orders
  containers:
{"".join(container(c) for c in range(containers))}  volumes:
    - name: config
      configMap:
        name: web-config
"""


def config_map(i):
    lines = "".join(f"    key{k}: value {k} of config {i}, yes\n" for k in range(40))
    return f"""apiVersion: v1
kind: ConfigMap
metadata:
  name: orders-{i}
  namespace: shop
data:
  settings.yaml: |
{lines}"""
