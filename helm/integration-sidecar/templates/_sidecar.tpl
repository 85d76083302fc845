{{/*
Add the sidecar to a pod spec by hand, without the webhook. From a chart that depends on this
one (Chart.yaml `dependencies: [{name: integration-sidecar, ...}]`), pass this chart's context,
`(index .Subcharts "integration-sidecar")`; its values (`integration-sidecar.sidecar.*` in the
parent's values) choose the mode, port, config map, secret, log level and resources:

  spec:
    initContainers:   # native mode (Kubernetes 1.29+); under `containers:` in container mode
      {{- include "integration-sidecar.sidecar.container" (index .Subcharts "integration-sidecar") | nindent 6 }}
    containers:
      - name: app
        env:
          {{- include "integration-sidecar.sidecar.env" (index .Subcharts "integration-sidecar") | nindent 10 }}
        volumeMounts:  # only needed in unixSocket mode
          {{- include "integration-sidecar.sidecar.appVolumeMounts" (index .Subcharts "integration-sidecar") | nindent 10 }}
    volumes:
      {{- include "integration-sidecar.sidecar.volumes" (index .Subcharts "integration-sidecar") | nindent 6 }}

The output is the same container the injector adds (a test compares them).
*/}}

{{- define "integration-sidecar.sidecar.address" -}}
{{- if .Values.sidecar.unixSocket -}}
unix:/run/integration-sidecar/sidecar.sock
{{- else -}}
127.0.0.1:{{ .Values.sidecar.port }}
{{- end -}}
{{- end -}}

{{- define "integration-sidecar.sidecar.probe" -}}
{{- $sidecar := .root.Values.sidecar -}}
{{- if or $sidecar.unixSocket (eq $sidecar.probes "exec") -}}
exec:
  command: [python, -m, sidecar.injector.probe, {{ include "integration-sidecar.sidecar.address" .root | quote }}]
timeoutSeconds: 3
periodSeconds: {{ .exec }}
{{- else -}}
grpc:
  port: {{ $sidecar.port }}
timeoutSeconds: 1
periodSeconds: {{ .grpc }}
{{- end }}
failureThreshold: {{ .failures }}
{{- end -}}

{{- define "integration-sidecar.sidecar.listen" -}}
{{- if .Values.sidecar.unixSocket -}}
unix:/run/integration-sidecar/sidecar.sock
{{- else -}}
{{ ternary "0.0.0.0" "127.0.0.1" (eq .Values.sidecar.probes "grpc") }}:{{ .Values.sidecar.port }}
{{- end -}}
{{- end -}}

{{- define "integration-sidecar.sidecar.container" -}}
{{- $sidecar := .Values.sidecar -}}
- name: integration-sidecar
  image: {{ include "integration-sidecar.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - serve
    - --listen
    - {{ include "integration-sidecar.sidecar.listen" . | quote }}
    {{- if $sidecar.configMap }}
    - --config
    - /etc/integration-sidecar/config.yaml
    {{- end }}
  {{- if $sidecar.logLevel }}
  env:
    - name: INTEGRATION_SIDECAR_LOG_LEVEL
      value: {{ $sidecar.logLevel | quote }}
  {{- end }}
  {{- if $sidecar.secret }}
  envFrom:
    - secretRef:
        name: {{ $sidecar.secret | quote }}
  {{- end }}
  {{- if not $sidecar.unixSocket }}
  ports:
    - containerPort: {{ $sidecar.port }}
      protocol: TCP
  {{- end }}
  {{- if ne $sidecar.probes "none" }}
  startupProbe:
    {{- include "integration-sidecar.sidecar.probe" (dict "root" . "grpc" 1 "exec" 2 "failures" 30) | nindent 4 }}
  readinessProbe:
    {{- include "integration-sidecar.sidecar.probe" (dict "root" . "grpc" 5 "exec" 10 "failures" 3) | nindent 4 }}
  livenessProbe:
    {{- include "integration-sidecar.sidecar.probe" (dict "root" . "grpc" 10 "exec" 20 "failures" 3) | nindent 4 }}
  {{- end }}
  {{- with $sidecar.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 10001
    runAsGroup: 10001
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop: [ALL]
    seccompProfile:
      type: RuntimeDefault
  volumeMounts:
    - name: integration-sidecar-tmp
      mountPath: /tmp
    {{- if $sidecar.configMap }}
    - name: integration-sidecar-config
      mountPath: /etc/integration-sidecar
      readOnly: true
    {{- end }}
    {{- if $sidecar.unixSocket }}
    - name: integration-sidecar-socket
      mountPath: /run/integration-sidecar
    {{- end }}
  {{- if eq $sidecar.mode "native" }}
  restartPolicy: Always
  {{- else if gt (int $sidecar.drainSeconds) 0 }}
  lifecycle:
    preStop:
      exec:
        command: [sleep, {{ $sidecar.drainSeconds | quote }}]
  {{- end }}
{{- end -}}

{{- define "integration-sidecar.sidecar.volumes" -}}
- name: integration-sidecar-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.sidecar.configMap }}
- name: integration-sidecar-config
  configMap:
    name: {{ .Values.sidecar.configMap | quote }}
{{- end }}
{{- if .Values.sidecar.unixSocket }}
- name: integration-sidecar-socket
  emptyDir: {}
{{- end }}
{{- end -}}

{{- define "integration-sidecar.sidecar.env" -}}
- name: INTEGRATION_SIDECAR_ADDRESS
  value: {{ include "integration-sidecar.sidecar.address" . | quote }}
{{- end -}}

{{- define "integration-sidecar.sidecar.appVolumeMounts" -}}
{{- if .Values.sidecar.unixSocket }}
- name: integration-sidecar-socket
  mountPath: /run/integration-sidecar
{{- else -}}
[]
{{- end }}
{{- end -}}
