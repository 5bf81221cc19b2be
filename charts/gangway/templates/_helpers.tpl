{{/*
Shared names, labels and derived settings of the Gangway chart.
*/}}

{{/* Chart name, limited to 63 characters because it ends up in label values. */}}
{{- define "gangway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects. A release whose name already contains the
chart name keeps its name, so release "gangway" yields objects named "gangway".
*/}}
{{- define "gangway.fullname" -}}
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

{{/* Chart name and version for the helm.sh/chart label. */}}
{{- define "gangway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the controller pods. They must never change after install. */}}
{{- define "gangway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gangway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "gangway.labels" -}}
helm.sh/chart: {{ include "gangway.chart" . }}
app.kubernetes.io/name: {{ include "gangway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gangway
{{- end }}

{{- define "gangway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gangway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: a digest wins over a tag, and the tag defaults to appVersion. */}}
{{- define "gangway.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Listen address for one container port: "host:port", with an IPv6 host in
brackets as socket-address parsers expect ("[::]:8080").
Call with (list $ PORT).
*/}}
{{- define "gangway.listenAddress" -}}
{{- $root := index . 0 }}
{{- $port := index . 1 | int }}
{{- $host := $root.Values.controller.bindAddress }}
{{- if contains ":" $host }}
{{- printf "[%s]:%d" $host $port }}
{{- else }}
{{- printf "%s:%d" $host $port }}
{{- end }}
{{- end }}

{{/* Lowest of the container ports, which decides whether binding needs privilege. */}}
{{- define "gangway.lowestContainerPort" -}}
{{- $ports := .Values.controller.containerPorts }}
{{- min ($ports.http | int) ($ports.https | int) ($ports.admin | int) }}
{{- end }}

{{/*
"true" when a listener binds a port below 1024. Linux reserves those ports for
processes with CAP_NET_BIND_SERVICE unless net.ipv4.ip_unprivileged_port_start
is lowered; the default container ports (8080, 8443, 9180) need neither.
*/}}
{{- define "gangway.needsPrivilegedPort" -}}
{{- if lt (include "gangway.lowestContainerPort" . | int) 1024 }}true{{ end }}
{{- end }}

{{/*
Whole seconds in a duration of the form "<digits><unit>" (ms, s, m or h), the
form values.schema.json allows. Milliseconds round up so that the comparison
with terminationGracePeriodSeconds stays on the safe side.
*/}}
{{- define "gangway.durationSeconds" -}}
{{- $duration := toString . }}
{{- $digits := regexFind "^[0-9]+" $duration }}
{{- $number := $digits | int64 }}
{{- $unit := trimPrefix $digits $duration }}
{{- if not $digits }}{{ fail (printf "invalid duration %q: expected digits followed by ms, s, m or h" $duration) }}
{{- else if eq $unit "ms" }}{{ div (add $number 999) 1000 }}
{{- else if eq $unit "s" }}{{ $number }}
{{- else if eq $unit "m" }}{{ mul $number 60 }}
{{- else if eq $unit "h" }}{{ mul $number 3600 }}
{{- else }}{{ fail (printf "invalid duration %q: expected digits followed by ms, s, m or h" $duration) }}
{{- end }}
{{- end }}

{{- define "gangway.publishService" -}}
{{- default (printf "%s/%s" .Release.Namespace (include "gangway.fullname" .)) .Values.controller.publishService }}
{{- end }}

{{- define "gangway.leaseName" -}}
{{- default (printf "%s-leader" (include "gangway.fullname" .)) .Values.controller.leaderElection.leaseName }}
{{- end }}

{{/* Number of pods the PodDisruptionBudget protects: the HPA floor or the fixed replica count. */}}
{{- define "gangway.minimumReplicas" -}}
{{- if .Values.autoscaling.enabled }}
{{- .Values.autoscaling.minReplicas }}
{{- else }}
{{- .Values.replicas }}
{{- end }}
{{- end }}

{{/*
Rules for the namespaced objects the controller watches and writes. They form
the ClusterRole when all namespaces are watched, and a Role in
controller.watchNamespace otherwise. Writes stop at Ingress status and Events.
*/}}
{{- define "gangway.namespacedRules" -}}
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["get", "list", "watch"]
# Status is written with a JSON merge patch on the status subresource.
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["services", "secrets"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch"]
# Events go through events.k8s.io/v1 only (kube-runtime's Recorder), so the
# core v1 events resource needs no grant.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
