{{/* Names ------------------------------------------------------------------ */}}

{{- define "driftline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource: <release>-driftline, or the release name
when it already contains the chart name. */}}
{{- define "driftline.fullname" -}}
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

{{- define "driftline.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "driftline.labels" -}}
helm.sh/chart: {{ include "driftline.chart" . }}
{{ include "driftline.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "driftline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "driftline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "driftline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "driftline.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Service in front of the webhook and the operator's metrics. */}}
{{- define "driftline.serviceName" -}}
{{- include "driftline.fullname" . }}
{{- end }}

{{- define "driftline.tlsSecretName" -}}
{{- if eq .Values.tls.mode "secret" }}
{{- required "tls.secret.name is required when tls.mode is secret: name a kubernetes.io/tls Secret with tls.crt and tls.key" .Values.tls.secret.name }}
{{- else }}
{{- printf "%s-webhook-tls" (include "driftline.fullname" .) }}
{{- end }}
{{- end }}

{{- define "driftline.certificateName" -}}
{{- printf "%s-webhook" (include "driftline.fullname" .) }}
{{- end }}

{{/* DNS names the webhook's serving certificate must cover. */}}
{{- define "driftline.webhookDNSNames" -}}
{{- $svc := include "driftline.serviceName" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson }}
{{- end }}

{{- define "driftline.image" -}}
{{- printf "%s:%s" .image.repository (default .chart.AppVersion .image.tag) }}
{{- end }}

{{/* Namespaces the webhook never mutates. */}}
{{- define "driftline.excludedNamespaces" -}}
{{- concat (list "kube-system" .Release.Namespace) .Values.webhook.excludeNamespaces | uniq | toJson }}
{{- end }}

{{/* The Lease whose holder alone acts (see templates/leader-election.yaml). */}}
{{- define "driftline.leaseName" -}}
{{- printf "%s-leader" (include "driftline.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The operator's shards as a JSON list: operator.shards, or one unnamed
shard acting in every namespace the operator serves. A namespace in two
shards would be acted on twice: refused. */}}
{{- define "driftline.shards" -}}
{{- $seen := dict }}
{{- range $shard := .Values.operator.shards }}
{{- if hasKey $seen (printf "shard:%s" $shard.name) }}
{{- fail (printf "operator.shards: two shards are named %s" $shard.name) }}
{{- end }}
{{- $_ := set $seen (printf "shard:%s" $shard.name) true }}
{{- range $namespace := $shard.namespaces }}
{{- if hasKey $seen $namespace }}
{{- fail (printf "operator.shards: namespace %s is in shards %s and %s; each namespace belongs to one shard" $namespace (get $seen $namespace) $shard.name) }}
{{- end }}
{{- $_ := set $seen $namespace $shard.name }}
{{- end }}
{{- end }}
{{- if .Values.operator.shards }}
{{- toJson .Values.operator.shards }}
{{- else }}
{{- toJson (list (dict "name" "")) }}
{{- end }}
{{- end }}

{{/* One shard's Deployment name: <fullname>-<shard> (<fullname> unsharded).
Context: (dict "root" $ "shard" $shard). */}}
{{- define "driftline.shardFullname" -}}
{{- if .shard.name }}
{{- printf "%s-%s" (include "driftline.fullname" .root) .shard.name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- include "driftline.fullname" .root }}
{{- end }}
{{- end }}

{{/* One shard's Lease: <fullname>-<shard>-leader (<fullname>-leader unsharded). */}}
{{- define "driftline.shardLeaseName" -}}
{{- printf "%s-leader" (include "driftline.shardFullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The explainer Deployment (values explainer.*): its name, Service and labels. */}}
{{- define "driftline.explainerName" -}}
{{- printf "%s-explainer" (include "driftline.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "driftline.explainerSelectorLabels" -}}
app.kubernetes.io/name: {{ include "driftline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: explainer
{{- end }}

{{- define "driftline.explainerLabels" -}}
helm.sh/chart: {{ include "driftline.chart" . }}
{{ include "driftline.explainerSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Where the operator sends explanation jobs (DRIFTLINE_EXPLAINER_URL). */}}
{{- define "driftline.explainerURL" -}}
{{- printf "http://%s.%s.svc:%v" (include "driftline.explainerName" .) .Release.Namespace .Values.explainer.port }}
{{- end }}
