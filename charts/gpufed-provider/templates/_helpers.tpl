{{- define "gpufed-provider.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gpufed-provider.selectorLabels" -}}
app.kubernetes.io/name: gpufed-device-plugin
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gpufed-provider.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gpufed
{{- end -}}

{{/* "true" in pull mode (gpufed-agent connects out), "" in push mode. */}}
{{- define "gpufed-provider.pull" -}}
{{- if eq .Values.mode "pull" }}true{{ end -}}
{{- end -}}

{{- define "gpufed-provider.agentSelectorLabels" -}}
app.kubernetes.io/name: gpufed-agent
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The Secret holding the bootstrap token (key `token`), or "" for none. */}}
{{- define "gpufed-provider.bootstrapTokenSecret" -}}
{{- if .Values.hub.bootstrapTokenSecret -}}
{{- .Values.hub.bootstrapTokenSecret -}}
{{- else if .Values.hub.bootstrapToken -}}
{{- include "gpufed-provider.fullname" . }}-bootstrap-token
{{- end -}}
{{- end -}}
