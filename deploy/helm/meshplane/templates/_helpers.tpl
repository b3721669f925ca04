{{/*
Names, labels, images and checks shared by every template.
*/}}

{{- define "meshplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name prefix: <release>-<chart> unless the release name already contains the chart name. */}}
{{- define "meshplane.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Names of the parts (kept <= 63 characters with their suffix). */}}
{{- define "meshplane.gateway.fullname" -}}
{{- printf "%s-gateway" (include "meshplane.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}
{{- define "meshplane.gateway.metricsName" -}}
{{- printf "%s-gateway-metrics" (include "meshplane.fullname" . | trunc 47 | trimSuffix "-") -}}
{{- end -}}
{{- define "meshplane.migrations.fullname" -}}
{{- printf "%s-migrate" (include "meshplane.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}

{{/* Label that admits a pod to the control plane's gRPC port when networkPolicy.allowExternal=false. */}}
{{- define "meshplane.clientLabel" -}}
{{- printf "%s-client" (include "meshplane.fullname" . | trunc 56 | trimSuffix "-") -}}
{{- end -}}

{{- define "meshplane.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every resource. */}}
{{- define "meshplane.labels" -}}
helm.sh/chart: {{ include "meshplane.chart" . }}
app.kubernetes.io/name: {{ include "meshplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: meshplane
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: include "meshplane.selectorLabels" (list $ "control-plane"). */}}
{{- define "meshplane.selectorLabels" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ include "meshplane.name" $ }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* All labels of one component's resources. */}}
{{- define "meshplane.componentLabels" -}}
{{ include "meshplane.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "meshplane.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "meshplane.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The migration hook cannot use the release's ServiceAccount on first install (hooks run first). */}}
{{- define "meshplane.migrations.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- include "meshplane.migrations.fullname" . -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Image reference: include "meshplane.image" (list $ .Values.controlPlane.image). */}}
{{- define "meshplane.image" -}}
{{- $ := index . 0 -}}
{{- $image := index . 1 -}}
{{- $repo := $image.repository -}}
{{- if $image.registry -}}{{- $repo = printf "%s/%s" $image.registry $image.repository -}}{{- end -}}
{{- $tag := default $.Chart.AppVersion $image.tag | toString -}}
{{- if $image.digest -}}
{{- printf "%s:%s@%s" $repo $tag $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{/* Seconds in a duration string such as 500ms, 30s, 2m, 1h (the schema enforces the form). */}}
{{- define "meshplane.seconds" -}}
{{- $d := toString . | trim | lower -}}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $d -}}
{{- $unit := trimPrefix $num $d -}}
{{- $f := float64 $num -}}
{{- if eq $unit "ms" -}}{{- divf $f 1000 -}}
{{- else if eq $unit "m" -}}{{- mulf $f 60 -}}
{{- else if eq $unit "h" -}}{{- mulf $f 3600 -}}
{{- else -}}{{- $f -}}
{{- end -}}
{{- end -}}

{{/* Pod anti-affinity preset: include "meshplane.affinity" (list $ "control-plane" .Values.controlPlane). */}}
{{- define "meshplane.affinity" -}}
{{- $ := index . 0 -}}
{{- $component := index . 1 -}}
{{- $values := index . 2 -}}
{{- if $values.affinity -}}
{{ toYaml $values.affinity }}
{{- else if eq $values.podAntiAffinity "soft" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "meshplane.selectorLabels" (list $ $component) | nindent 12 }}
{{- else if eq $values.podAntiAffinity "hard" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "meshplane.selectorLabels" (list $ $component) | nindent 10 }}
{{- end -}}
{{- end -}}

{{/* Topology spread constraints, defaulting each labelSelector to the component's pods. */}}
{{- define "meshplane.topologySpread" -}}
{{- $ := index . 0 -}}
{{- $selector := include "meshplane.selectorLabels" (list $ (index . 1)) | fromYaml -}}
{{- $out := list -}}
{{- range (index . 2) -}}
{{- $c := deepCopy . -}}
{{- if not $c.labelSelector -}}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) -}}
{{- end -}}
{{- $out = append $out $c -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/*
Checks the schema cannot express (they compare values with each other). Each failure names the
value to change. Included from the control-plane ConfigMap, which is always rendered.
*/}}
{{- define "meshplane.validate" -}}
{{- $cp := .Values.controlPlane -}}
{{- $drain := include "meshplane.seconds" $cp.config.drainTimeout | float64 -}}
{{- $needed := addf $drain $cp.preStopSleepSeconds -}}
{{- if le (float64 $cp.terminationGracePeriodSeconds) $needed -}}
{{- fail (printf "controlPlane.terminationGracePeriodSeconds (%v) must be greater than controlPlane.config.drainTimeout (%s) plus controlPlane.preStopSleepSeconds (%v), or Kubernetes kills the plane before it has drained" $cp.terminationGracePeriodSeconds $cp.config.drainTimeout $cp.preStopSleepSeconds) -}}
{{- end -}}
{{- /* The plane answers NOT_SERVING to every health check while it drains, liveness included. */ -}}
{{- $live := $cp.probes.liveness -}}
{{- $liveBudget := mulf $live.periodSeconds $live.failureThreshold -}}
{{- if le $liveBudget $drain -}}
{{- fail (printf "controlPlane.probes.liveness.periodSeconds * failureThreshold (%v * %v = %vs) must be longer than controlPlane.config.drainTimeout (%s): the plane reports NOT_SERVING while it drains, so the kubelet would restart it mid-drain" $live.periodSeconds $live.failureThreshold $liveBudget $cp.config.drainTimeout) -}}
{{- end -}}
{{- /* The plane refuses these at start-up: a drain of 0 (nothing could drain), a heartbeat under 10ms (a busy loop). */ -}}
{{- if le $drain 0.0 -}}
{{- fail (printf "controlPlane.config.drainTimeout (%s) must be more than 0" $cp.config.drainTimeout) -}}
{{- end -}}
{{- $hb := include "meshplane.seconds" $cp.config.heartbeatInterval | float64 -}}
{{- if lt $hb 0.01 -}}
{{- fail (printf "controlPlane.config.heartbeatInterval (%s) must be at least 10ms" $cp.config.heartbeatInterval) -}}
{{- end -}}
{{- $lease := include "meshplane.seconds" $cp.config.leaseTimeout | float64 -}}
{{- if le $lease $hb -}}
{{- fail (printf "controlPlane.config.leaseTimeout (%s) must be longer than controlPlane.config.heartbeatInterval (%s)" $cp.config.leaseTimeout $cp.config.heartbeatInterval) -}}
{{- end -}}
{{- if not .Values.embedded.enabled -}}
{{- if not .Values.database.existingSecret -}}
{{- fail "database.existingSecret is required: name an existing Secret holding the PostgreSQL URL (postgresql+asyncpg://...), or set embedded.enabled=true for an evaluation install" -}}
{{- end -}}
{{- if not (or .Values.nats.url .Values.nats.existingSecret) -}}
{{- fail "nats.url (e.g. nats://nats.nats.svc:4222) or nats.existingSecret is required, or set embedded.enabled=true for an evaluation install" -}}
{{- end -}}
{{- else if or .Values.nats.tls.caSecret.name .Values.nats.tls.clientCertSecret.name -}}
{{- fail "nats.tls needs an external NATS: the embedded nats-server (embedded.enabled=true) is local and plaintext" -}}
{{- else if or (gt (int $cp.replicas) 1) $cp.autoscaling.enabled -}}
{{- fail "embedded.enabled keeps SQLite and NATS inside one pod: set controlPlane.replicas=1 and controlPlane.autoscaling.enabled=false, or configure database and nats instead" -}}
{{- end -}}
{{- range $part, $v := dict "controlPlane" $cp "gateway" .Values.gateway -}}
{{- if and (ne (toString $v.pdb.minAvailable) "") (ne (toString $v.pdb.maxUnavailable) "") -}}
{{- fail (printf "%s.pdb: set only one of minAvailable and maxUnavailable (set the other to \"\")" $part) -}}
{{- end -}}
{{- if and $v.pdb.enabled (eq (toString $v.pdb.minAvailable) "") (eq (toString $v.pdb.maxUnavailable) "") -}}
{{- fail (printf "%s.pdb.enabled needs minAvailable or maxUnavailable" $part) -}}
{{- end -}}
{{- if $v.autoscaling.enabled -}}
{{- if gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas) -}}
{{- fail (printf "%s.autoscaling.minReplicas (%v) must not exceed maxReplicas (%v)" $part $v.autoscaling.minReplicas $v.autoscaling.maxReplicas) -}}
{{- end -}}
{{- if not (or $v.autoscaling.targetCPUUtilizationPercentage $v.autoscaling.targetMemoryUtilizationPercentage) -}}
{{- fail (printf "%s.autoscaling.enabled needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" $part) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $sm := $cp.metrics.serviceMonitor -}}
{{- if and $sm.enabled (not $cp.metrics.enabled) -}}
{{- fail "controlPlane.metrics.serviceMonitor.enabled needs controlPlane.metrics.enabled=true" -}}
{{- end -}}
{{- if and $sm.enabled (gt (include "meshplane.seconds" $sm.scrapeTimeout | float64) (include "meshplane.seconds" $sm.interval | float64)) -}}
{{- fail "controlPlane.metrics.serviceMonitor.scrapeTimeout must not exceed interval" -}}
{{- end -}}
{{- if $cp.tls.enabled -}}
{{- if not $cp.tls.existingSecret -}}
{{- fail "controlPlane.tls.enabled needs controlPlane.tls.existingSecret: an existing Secret with the certificate and key (a kubernetes.io/tls Secret, e.g. from cert-manager)" -}}
{{- end -}}
{{- if has (int $cp.ports.health) (list (int $cp.ports.grpc) (int $cp.ports.metrics)) -}}
{{- fail (printf "controlPlane.ports.health (%v) must differ from ports.grpc and ports.metrics: it serves health checks alone, in plaintext" $cp.ports.health) -}}
{{- end -}}
{{- else if $cp.tls.clientCA.existingSecret -}}
{{- fail "controlPlane.tls.clientCA.existingSecret needs controlPlane.tls.enabled=true: client certificates need TLS" -}}
{{- end -}}
{{- $gw := .Values.gateway -}}
{{- if $gw.enabled -}}
{{- $up := $gw.config.upstreamTLS -}}
{{- if and $cp.tls.enabled (not $gw.config.upstream) (not $up.enabled) -}}
{{- fail "controlPlane.tls.enabled: the gateway dials the control plane, so set gateway.config.upstreamTLS.enabled=true (and caSecret for the CA that signed the plane's certificate)" -}}
{{- end -}}
{{- if and $cp.tls.clientCA.existingSecret (not $gw.config.upstream) (not $up.clientCertSecret.name) -}}
{{- fail "controlPlane.tls.clientCA requires client certificates: give the gateway one with gateway.config.upstreamTLS.clientCertSecret.name" -}}
{{- end -}}
{{- if and $gw.tls.enabled (not $gw.tls.existingSecret) -}}
{{- fail "gateway.tls.enabled needs gateway.tls.existingSecret: an existing Secret with the certificate and key" -}}
{{- end -}}
{{- if $gw.tls.clientCA.existingSecret -}}
{{- if not $gw.tls.enabled -}}
{{- fail "gateway.tls.clientCA.existingSecret needs gateway.tls.enabled=true: client certificates need TLS" -}}
{{- end -}}
{{- if not $gw.metrics.enabled -}}
{{- fail "gateway.tls.clientCA.existingSecret needs gateway.metrics.enabled=true: the kubelet's probes show no client certificate, so they ask the plain-HTTP metrics port" -}}
{{- end -}}
{{- end -}}
{{- if le (float64 $gw.terminationGracePeriodSeconds) (include "meshplane.seconds" $gw.config.shutdownTimeout | float64) -}}
{{- fail (printf "gateway.terminationGracePeriodSeconds (%v) must be greater than gateway.config.shutdownTimeout (%s)" $gw.terminationGracePeriodSeconds $gw.config.shutdownTimeout) -}}
{{- end -}}
{{- $tls := $gw.config.upstreamTLS -}}
{{- if and (or $tls.caSecret.name $tls.serverName $tls.clientCertSecret.name) (not $tls.enabled) -}}
{{- fail "gateway.config.upstreamTLS.caSecret.name, clientCertSecret.name and serverName need gateway.config.upstreamTLS.enabled=true" -}}
{{- end -}}
{{- $gsm := $gw.metrics.serviceMonitor -}}
{{- if and $gsm.enabled (not $gw.metrics.enabled) -}}
{{- fail "gateway.metrics.serviceMonitor.enabled needs gateway.metrics.enabled=true" -}}
{{- end -}}
{{- if and $gsm.enabled (gt (include "meshplane.seconds" $gsm.scrapeTimeout | float64) (include "meshplane.seconds" $gsm.interval | float64)) -}}
{{- fail "gateway.metrics.serviceMonitor.scrapeTimeout must not exceed interval" -}}
{{- end -}}
{{- end -}}
{{- end -}}
