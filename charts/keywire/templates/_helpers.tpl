{{/* Names and labels shared by every template. */}}

{{- define "keywire.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name: the release name if it already contains the chart name. */}}
{{- define "keywire.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "keywire.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "keywire.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "keywire.webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keywire.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end }}

{{- define "keywire.controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keywire.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/* The webhook's Service: the API server calls it; its DNS names are the serving cert's SANs. */}}
{{- define "keywire.webhook.service" -}}
{{- include "keywire.fullname" . }}
{{- end }}

{{- define "keywire.webhook.serviceAccount" -}}
{{- if .Values.webhook.serviceAccount.create }}
{{- default (printf "%s-webhook" (include "keywire.fullname" .)) .Values.webhook.serviceAccount.name }}
{{- else }}
{{- required "webhook.serviceAccount.name is required when webhook.serviceAccount.create is false" .Values.webhook.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "keywire.controller.serviceAccount" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (printf "%s-controller" (include "keywire.fullname" .)) .Values.controller.serviceAccount.name }}
{{- else }}
{{- required "controller.serviceAccount.name is required when controller.serviceAccount.create is false" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the serving pair, in every certificate mode. */}}
{{- define "keywire.tlsSecret" -}}
{{- $mode := .Values.certificates.mode }}
{{- if eq $mode "provided" }}
{{- required "certificates.provided.secretName is required when certificates.mode is provided" .Values.certificates.provided.secretName }}
{{- else if eq $mode "cert-manager" }}
{{- default (printf "%s-webhook-tls" (include "keywire.fullname" .)) .Values.certificates.certManager.secretName }}
{{- else if eq $mode "self-managed" }}
{{- default (printf "%s-webhook-tls" (include "keywire.fullname" .)) .Values.certificates.selfManaged.secretName }}
{{- else }}
{{- fail (printf "certificates.mode must be self-managed, cert-manager or provided, not %q" $mode) }}
{{- end }}
{{- end }}

{{/* The serving certificate's DNS names: the Service as the API server addresses it. */}}
{{- define "keywire.webhook.hosts" -}}
{{- $svc := include "keywire.webhook.service" . }}
{{- $ns := .Release.Namespace }}
- {{ printf "%s.%s.svc" $svc $ns }}
- {{ printf "%s.%s.svc.%s" $svc $ns .Values.clusterDomain }}
{{- end }}

{{- define "keywire.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Namespaces no webhook ever sees: kube-system, keywire's own, and the configured extras. */}}
{{- define "keywire.webhook.namespaceSelector" -}}
{{- $excluded := concat (list "kube-system" .Release.Namespace) .Values.webhook.namespaceSelector.excludeNamespaces | uniq }}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values: {{ toJson $excluded }}
{{- with .Values.webhook.namespaceSelector.matchExpressions }}
{{ toYaml . | indent 2 }}
{{- end }}
{{- with .Values.webhook.namespaceSelector.matchLabels }}
matchLabels:
{{ toYaml . | indent 2 }}
{{- end }}
{{- end }}

{{/* clientConfig for one webhook path; the caBundle is written only where Helm owns it. */}}
{{- define "keywire.webhook.clientConfig" -}}
{{- $root := index . 0 }}
{{- $path := index . 1 }}
clientConfig:
  service:
    name: {{ include "keywire.webhook.service" $root }}
    namespace: {{ $root.Release.Namespace }}
    path: {{ $path }}
    port: {{ $root.Values.webhook.service.port }}
{{- if eq $root.Values.certificates.mode "provided" }}
  caBundle: {{ required "certificates.provided.caBundle (base64 PEM of the CA) is required when certificates.mode is provided" $root.Values.certificates.provided.caBundle }}
{{- end }}
{{- end }}

{{/* Annotations that let cert-manager's cainjector fill the caBundle. */}}
{{- define "keywire.webhook.configAnnotations" -}}
{{- if eq .Values.certificates.mode "cert-manager" }}
cert-manager.io/inject-ca-from: {{ printf "%s/%s" .Release.Namespace (include "keywire.certManager.certificate" .) }}
{{- end }}
{{- end }}

{{- define "keywire.certManager.certificate" -}}
{{- printf "%s-webhook" (include "keywire.fullname" .) }}
{{- end }}

{{/* Mirror pods (static pods, annotation kubernetes.io/config.mirror) are the kubelet's; never touch them. */}}
{{- define "keywire.webhook.matchConditions" -}}
matchConditions:
  - name: exclude-mirror-pods
    expression: >-
      object == null || !has(object.metadata.annotations) ||
      !('kubernetes.io/config.mirror' in object.metadata.annotations)
{{- end }}
