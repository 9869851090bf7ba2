{{/* The labels every object carries. */}}
{{- define "dapifs.labels" -}}
app.kubernetes.io/name: dapifs
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* A DaemonSet's selector: the component's (node, keeper), as examples/kubernetes selects them. */}}
{{- define "dapifs.selector" -}}
app.kubernetes.io/name: dapifs
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The image: by digest when one is given, else by tag (the chart's appVersion by default). */}}
{{- define "dapifs.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* The driver's plugin directory: its CSI socket, the keeper's socket, its records. */}}
{{- define "dapifs.pluginDir" -}}
{{ trimSuffix "/" .Values.kubeletDir }}/plugins/csi.dapifs.dev
{{- end }}
