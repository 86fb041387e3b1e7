{{- define "damocles-operator.name" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "damocles-operator.labels" -}}
app.kubernetes.io/name: damocles-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: damocles
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The step profiles, with the step image defaulting to the chart's appVersion: the operator
and the step binary move together (the step request version). */}}
{{- define "damocles-operator.profiles" -}}
{{- $profiles := deepCopy .Values.profiles -}}
{{- $defaults := get $profiles "defaults" | default dict -}}
{{- if not (get $defaults "image") -}}
{{- $repository := required "stepImage.repository is required (or profiles.defaults.image): build images/step.Dockerfile (images/step-cuda.Dockerfile for GPU nodes), push it to your registry and name it here (docs/images.md)" .Values.stepImage.repository -}}
{{- $_ := set $defaults "image" (printf "%s:%s" $repository (.Values.stepImage.tag | default .Chart.AppVersion)) -}}
{{- end -}}
{{- $_ := set $profiles "defaults" $defaults -}}
{{- toYaml $profiles -}}
{{- end -}}

{{- define "damocles-operator.selector" -}}
app.kubernetes.io/name: damocles-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
