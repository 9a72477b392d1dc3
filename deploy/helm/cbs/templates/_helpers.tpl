{{/* The object name: fullnameOverride, else the release name. */}}
{{- define "cbs.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* bodyYaml parsed, as JSON (include "cbs.spec" . | fromJson). */}}
{{- define "cbs.spec" -}}
{{- $spec := fromYaml .Values.bodyYaml -}}
{{- if hasKey $spec "Error" -}}
{{- fail (printf "bodyYaml is not valid YAML: %s" $spec.Error) -}}
{{- end -}}
{{- toJson $spec -}}
{{- end -}}

{{/* The body id: body.id of bodyYaml, else the release name. */}}
{{- define "cbs.bodyId" -}}
{{- $spec := include "cbs.spec" . | fromJson -}}
{{- (get ($spec.body | default dict) "id") | default .Release.Name -}}
{{- end -}}

{{- define "cbs.selectorLabels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cbs.labels" -}}
{{ include "cbs.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: body
app.kubernetes.io/part-of: cbs
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
cbs.body: {{ include "cbs.bodyId" . | replace "_" "-" | quote }}
{{- end -}}

{{/* The metrics port: settings.metrics_port of bodyYaml, else metrics.port. */}}
{{- define "cbs.metricsPort" -}}
{{- $settings := (include "cbs.spec" . | fromJson).settings | default dict -}}
{{- (get $settings "metrics_port") | default .Values.metrics.port | int -}}
{{- end -}}

{{/* SIGTERM to SIGKILL: the value, else the body's drain_timeout (default 10) + 15. */}}
{{- define "cbs.grace" -}}
{{- $settings := (include "cbs.spec" . | fromJson).settings | default dict -}}
{{- $drain := (get $settings "drain_timeout") | default 10 | float64 | ceil | int -}}
{{- .Values.terminationGracePeriodSeconds | default (add $drain 15) | int -}}
{{- end -}}

{{/* The credentials file: security.creds of bodyYaml, else nats.credsPath. */}}
{{- define "cbs.credsPath" -}}
{{- $security := (include "cbs.spec" . | fromJson).security | default dict -}}
{{- (get $security "creds") | default .Values.nats.credsPath -}}
{{- end -}}
