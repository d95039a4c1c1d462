{{/* Common labels. */}}
{{- define "meshwork.labels" -}}
app.kubernetes.io/part-of: meshwork
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Image reference: meshwork.image (dict "root" . "name" "ztunnel"). */}}
{{- define "meshwork.image" -}}
{{- $tag := .root.Values.global.tag | default .root.Chart.AppVersion -}}
{{- printf "%s/%s:%s" .root.Values.global.imageRegistry .name $tag -}}
{{- end -}}

{{/* Address of the control plane's gRPC service (config + CA). */}}
{{- define "meshwork.controlPlaneAddress" -}}
{{- if .Values.ztunnel.controlPlaneAddress -}}
{{- .Values.ztunnel.controlPlaneAddress -}}
{{- else -}}
{{- printf "https://meshwork-controlplane.%s.svc:%d" .Release.Namespace (int .Values.controlplane.ports.grpcTLS) -}}
{{- end -}}
{{- end -}}
