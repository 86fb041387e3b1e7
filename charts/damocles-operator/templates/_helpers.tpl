{{- define "damocles-operator.name" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "damocles-operator.labels" -}}
app.kubernetes.io/name: damocles-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "damocles-operator.selector" -}}
app.kubernetes.io/name: damocles-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
