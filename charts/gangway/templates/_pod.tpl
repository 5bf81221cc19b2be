{{/*
Pieces of the controller pod: the `gangway run` arguments, the security
contexts and the default anti-affinity.
*/}}

{{/* Arguments of the container, every flag in "--flag=value" form. */}}
{{- define "gangway.args" -}}
{{- $c := .Values.controller }}
{{- $args := list "run" }}
{{- $args = append $args (printf "--http-listen=%s" (include "gangway.listenAddress" (list . $c.containerPorts.http))) }}
{{- $args = append $args (printf "--https-listen=%s" (include "gangway.listenAddress" (list . $c.containerPorts.https))) }}
{{- $args = append $args (printf "--admin-listen=%s" (include "gangway.listenAddress" (list . $c.containerPorts.admin))) }}
{{- $args = append $args (printf "--http-public-port=%d" (default .Values.service.ports.http $c.httpPublicPort | int)) }}
{{- $args = append $args (printf "--https-public-port=%d" (default .Values.service.ports.https $c.httpsPublicPort | int)) }}
{{- $args = append $args (printf "--ingress-class=%s" .Values.ingressClass.name) }}
{{- $args = append $args (printf "--controller-name=%s" $c.controllerName) }}
{{- if $c.workerThreads }}
{{- $args = append $args (printf "--worker-threads=%d" ($c.workerThreads | int)) }}
{{- end }}
{{- $args = append $args (printf "--log-format=%s" $c.logFormat) }}
{{- $args = append $args (printf "--log-level=%s" $c.logLevel) }}
{{- $args = append $args (printf "--access-log=%t" $c.accessLog) }}
{{- $args = append $args (printf "--client-header-timeout=%s" $c.clientHeaderTimeout) }}
{{- $args = append $args (printf "--idle-timeout=%s" $c.idleTimeout) }}
{{- $args = append $args (printf "--upstream-connect-timeout=%s" $c.upstreamConnectTimeout) }}
{{- $args = append $args (printf "--upstream-response-timeout=%s" $c.upstreamResponseTimeout) }}
{{- $args = append $args (printf "--shutdown-timeout=%s" $c.shutdownTimeout) }}
{{- $args = append $args (printf "--tunnel-idle-timeout=%s" $c.tunnelIdleTimeout) }}
{{- if $c.watchNamespace }}
{{- $args = append $args (printf "--watch-namespace=%s" $c.watchNamespace) }}
{{- end }}
{{- if $c.publishAddress }}
{{- $args = append $args (printf "--publish-address=%s" $c.publishAddress) }}
{{- else }}
{{- $args = append $args (printf "--publish-service=%s" (include "gangway.publishService" .)) }}
{{- end }}
{{- $args = append $args (printf "--leader-election-namespace=%s" .Release.Namespace) }}
{{- $args = append $args (printf "--leader-election-lease=%s" (include "gangway.leaseName" .)) }}
{{- /* clap, the binary's argument parser, rejects a repeated flag by default, so a repeat in extraArgs would crash the pod at start. */}}
{{- $chartFlags := list }}
{{- range $args }}{{ $chartFlags = append $chartFlags (regexFind "^--[^=]+" .) }}{{ end }}
{{- range $c.extraArgs }}
{{- $flag := regexFind "^--[^=]+" . }}
{{- if and $flag (has $flag $chartFlags) }}
{{- fail (printf "controller.extraArgs repeats %s, which the chart already sets from a controller value: set that value instead (see the chart README)" $flag) }}
{{- end }}
{{- end }}
{{- toYaml (concat $args $c.extraArgs) }}
{{- end }}

{{/*
Pod security context from podSecurityContext. A container port below 1024
also lowers net.ipv4.ip_unprivileged_port_start to that port: the capability
that containerSecurityContext gains is not enough on its own, because the
kernel clears added capabilities when a non-root user starts a binary without
file capabilities, and the image's binary has none. The sysctl is in the
Kubernetes "safe" set, so the default kubelet and the baseline and restricted
Pod Security Standards allow it.
*/}}
{{- define "gangway.podSecurityContext" -}}
{{- $context := deepCopy .Values.podSecurityContext }}
{{- if include "gangway.needsPrivilegedPort" . }}
{{- $sysctls := get $context "sysctls" | default list }}
{{- $alreadySet := false }}
{{- range $sysctls }}
{{- if eq .name "net.ipv4.ip_unprivileged_port_start" }}{{ $alreadySet = true }}{{ end }}
{{- end }}
{{- if not $alreadySet }}
{{- $entry := dict "name" "net.ipv4.ip_unprivileged_port_start" "value" (include "gangway.lowestContainerPort" .) }}
{{- $_ := set $context "sysctls" (append $sysctls $entry) }}
{{- end }}
{{- end }}
{{- toYaml $context }}
{{- end }}

{{/* Container security context from containerSecurityContext, plus NET_BIND_SERVICE for a port below 1024. */}}
{{- define "gangway.containerSecurityContext" -}}
{{- $context := deepCopy .Values.containerSecurityContext }}
{{- if include "gangway.needsPrivilegedPort" . }}
{{- $capabilities := get $context "capabilities" | default dict }}
{{- $add := get $capabilities "add" | default list }}
{{- $_ := set $capabilities "add" (append $add "NET_BIND_SERVICE" | uniq) }}
{{- $_ := set $context "capabilities" $capabilities }}
{{- end }}
{{- toYaml $context }}
{{- end }}

{{/*
Affinity: the user's value when set, otherwise the podAntiAffinity preset,
which spreads the controller pods over nodes so that losing a node does not
take every replica with it.
*/}}
{{- define "gangway.affinity" -}}
{{- if .Values.affinity }}
{{- toYaml .Values.affinity }}
{{- else if eq .Values.podAntiAffinity "soft" }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "gangway.selectorLabels" . | nindent 12 }}
{{- else if eq .Values.podAntiAffinity "hard" }}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "gangway.selectorLabels" . | nindent 10 }}
{{- end }}
{{- end }}

{{/* Topology spread constraints, each given the pods' selector labels when it names none. */}}
{{- define "gangway.topologySpreadConstraints" -}}
{{- $constraints := list }}
{{- range .Values.topologySpreadConstraints }}
{{- $constraint := deepCopy . }}
{{- if not (hasKey $constraint "labelSelector") }}
{{- $_ := set $constraint "labelSelector" (dict "matchLabels" (include "gangway.selectorLabels" $ | fromYaml)) }}
{{- end }}
{{- $constraints = append $constraints $constraint }}
{{- end }}
{{- toYaml $constraints }}
{{- end }}

{{/* Fails the render when the settings contradict each other. */}}
{{- define "gangway.validate" -}}
{{- $shutdown := include "gangway.durationSeconds" .Values.controller.shutdownTimeout | int }}
{{- $sleep := ternary (.Values.preStop.sleepSeconds | int) 0 .Values.preStop.enabled }}
{{- if le (.Values.terminationGracePeriodSeconds | int) (add $shutdown $sleep | int) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed preStop.sleepSeconds (%d) plus controller.shutdownTimeout (%s), otherwise the kubelet kills the pod before in-flight requests finish: raise terminationGracePeriodSeconds or lower the others" (.Values.terminationGracePeriodSeconds | int) $sleep .Values.controller.shutdownTimeout) }}
{{- end }}
{{- if and (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget.minAvailable and podDisruptionBudget.maxUnavailable are both set: set one of them to null" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.service.enabled, because the ServiceMonitor scrapes the metrics Service" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (.Values.autoscaling.minReplicas | int) (.Values.autoscaling.maxReplicas | int)) }}
{{- fail (printf "autoscaling.minReplicas (%d) exceeds autoscaling.maxReplicas (%d)" (.Values.autoscaling.minReplicas | int) (.Values.autoscaling.maxReplicas | int)) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not .Values.autoscaling.targetCPUUtilizationPercentage) (not .Values.autoscaling.targetMemoryUtilizationPercentage) }}
{{- fail "autoscaling.enabled needs autoscaling.targetCPUUtilizationPercentage or autoscaling.targetMemoryUtilizationPercentage" }}
{{- end }}
{{- end }}
