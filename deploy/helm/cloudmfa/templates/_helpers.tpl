{{/* The release's base name, at most 63 characters (a DNS label). */}}
{{- define "cloudmfa.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cloudmfa.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of one component (api, worker, migrate): pass (list $ "api"). */}}
{{- define "cloudmfa.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ $root.Chart.Name }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "cloudmfa.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "cloudmfa.secretName" -}}
{{- .Values.secret.existingSecret | default (printf "%s-secrets" (include "cloudmfa.fullname" .)) -}}
{{- end -}}

{{- define "cloudmfa.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "cloudmfa.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* Every cloudmfa container's environment: the ConfigMap, then the Secret. Migrations run
     in their own Job, so no container migrates at start. */}}
{{- define "cloudmfa.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "cloudmfa.fullname" . }}-config
  - secretRef:
      name: {{ include "cloudmfa.secretName" . }}
env:
  - name: CLOUDMFA_AUTO_MIGRATE
    value: "false"
{{- end -}}

{{/* The image's user (10001), nothing writable but the emptyDirs, no privilege. */}}
{{- define "cloudmfa.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "cloudmfa.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* /tmp holds serve's per-worker metrics directory; the data dir stays empty when
     CLOUDMFA_SECRET_KEYS is set, as it must be here. */}}
{{- define "cloudmfa.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/cloudmfa
{{- end -}}

{{- define "cloudmfa.volumes" -}}
- name: tmp
  emptyDir: {}
- name: data
  emptyDir: {}
{{- end -}}
