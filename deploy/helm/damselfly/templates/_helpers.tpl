{{- define "damselfly.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "damselfly.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "damselfly.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "damselfly.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "damselfly.secretName" -}}
{{ .Values.secrets.existingSecret | default (printf "%s-secrets" (include "damselfly.fullname" .)) }}
{{- end -}}

{{/* TLS on, or the lab mode named explicitly: nothing else renders. */}}
{{- define "damselfly.checkTls" -}}
{{- if and (not .Values.tls.enabled) (not .Values.insecureLab) -}}
{{- fail "tls.enabled=false sends task keys in the clear: set insecureLab=true to say this is a lab" -}}
{{- end -}}
{{- end -}}

{{- define "damselfly.scheme" -}}
{{ if .Values.tls.enabled }}https{{ else }}http{{ end }}
{{- end -}}

{{- define "damselfly.edgeUrl" -}}
{{ include "damselfly.scheme" . }}://{{ include "damselfly.fullname" . }}-edge.{{ .Release.Namespace }}.svc:{{ .Values.edge.port }}
{{- end -}}

{{- define "damselfly.redisEnabled" -}}
{{- if or .Values.redis.bundled .Values.redis.external.url -}}true{{- end -}}
{{- end -}}

{{/* The Redis URL for database N, as an env entry of a daemon (PREFIX: DAMSELFLY_EDGE, ...). */}}
{{- define "damselfly.redisEnv" -}}
{{- if .root.Values.redis.external.url }}
- name: {{ .prefix }}_REDIS
  valueFrom:
    secretKeyRef: {name: {{ include "damselfly.secretName" .root }}, key: redis-url}
{{- else if .root.Values.redis.bundled }}
- name: {{ .prefix }}_REDIS
  value: redis://{{ include "damselfly.fullname" .root }}-redis:6379/{{ .db }}
{{- end }}
{{- end -}}

{{- define "damselfly.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end -}}

{{/* TLS files as a daemon's config reads them: /etc/damselfly/tls/{tls.crt,tls.key,ca.crt}. */}}
{{- define "damselfly.tlsToml" -}}
{{- if .Values.tls.enabled }}
[tls]
cert = "/etc/damselfly/tls/tls.crt"
key = "/etc/damselfly/tls/tls.key"
ca_file = "/etc/damselfly/ca/ca.crt"
{{- end }}
{{- end -}}

{{- define "damselfly.tlsVolumes" -}}
{{- if .root.Values.tls.enabled }}
- name: tls
  secret: {secretName: {{ .secret }}, defaultMode: 0400}
- name: ca
  secret: {secretName: {{ .root.Values.tls.caSecret }}, items: [{key: ca.crt, path: ca.crt}]}
{{- end }}
{{- end -}}

{{- define "damselfly.tlsMounts" -}}
{{- if .Values.tls.enabled }}
- {name: tls, mountPath: /etc/damselfly/tls, readOnly: true}
- {name: ca, mountPath: /etc/damselfly/ca, readOnly: true}
{{- end }}
{{- end -}}
