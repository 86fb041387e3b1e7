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

{{/* What the operator does to tasks, their pods and events, and nothing more: watch tasks,
patch their finalizer and status, delete a finished task after ttlSecondsAfterFinished; create,
watch and delete step pods (deletecollection: a task's pods by its uid label), read a step pod's
log for a result too big for its termination message; record Events. */}}
{{- define "damocles-operator.taskRules" }}
  # A SealingPool creates its tasks and deletes ended ones beyond its history limit.
  - apiGroups: [damocles.io]
    resources: [sealingtasks]
    verbs: [get, list, watch, create, patch, delete]
  - apiGroups: [damocles.io]
    resources: [sealingtasks/status]
    verbs: [patch]
  - apiGroups: [damocles.io]
    resources: [sealingpools]
    verbs: [get, list, watch]
  - apiGroups: [damocles.io]
    resources: [sealingpools/status]
    verbs: [patch]
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch, create, delete, deletecollection]
  # A step result too big for its termination message (a snap proof at 512 MiB and up) is read
  # from the step pod's log.
  - apiGroups: [""]
    resources: [pods/log]
    verbs: [get]
  - apiGroups: [events.k8s.io]
    resources: [events]
    verbs: [create, patch]
{{- end -}}
