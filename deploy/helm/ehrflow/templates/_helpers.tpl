{{/* Names and labels, as `helm create` and the charts platform teams trust make them. */}}
{{- define "ehrflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ehrflow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "ehrflow.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "ehrflow.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "ehrflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "ehrflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ehrflow
{{- end }}

{{/* Selector labels of one service: call with (dict "root" $ "service" "ingest"). */}}
{{- define "ehrflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ehrflow.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .service }}
{{- end }}

{{- define "ehrflow.componentLabels" -}}
{{ include "ehrflow.labels" .root }}
app.kubernetes.io/component: {{ .service }}
{{- end }}

{{- define "ehrflow.serviceName" -}}
{{- printf "%s-%s" (include "ehrflow.fullname" .root) .service | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The services that call the auth service's internal API. */}}
{{- define "ehrflow.authClients" -}}
{{- list "ingest" "inference" "writeback" | toJson }}
{{- end }}

{{- define "ehrflow.image" -}}
{{- $root := .root }}
{{- $own := index $root.Values.services .service "image" | default dict }}
{{- $repository := $own.repository | default (printf "%s/%s-%s" $root.Values.image.registry $root.Values.image.repository .service) }}
{{- if $own.digest }}
{{- printf "%s@%s" $repository $own.digest }}
{{- else }}
{{- printf "%s:%s" $repository ($own.tag | default $root.Values.image.tag | default $root.Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Kafka settings (EHRFLOW_KAFKA__*), for the services and the topic Job. */}}
{{- define "ehrflow.kafkaEnv" -}}
{{- $k := .Values.kafka }}
- name: EHRFLOW_KAFKA__BOOTSTRAP_SERVERS
  value: {{ $k.bootstrapServers | quote }}
- name: EHRFLOW_KAFKA__ENABLE_IDEMPOTENCE
  value: {{ $k.enableIdempotence | quote }}
- name: EHRFLOW_KAFKA__SECURITY_PROTOCOL
  value: {{ $k.securityProtocol | quote }}
- name: EHRFLOW_KAFKA__CREATE_TOPICS
  value: {{ eq $k.topics "services" | quote }}
- name: EHRFLOW_KAFKA__PARTITIONS
  value: {{ $k.partitions | quote }}
- name: EHRFLOW_KAFKA__REPLICATION_FACTOR
  value: {{ $k.replicationFactor | quote }}
- name: EHRFLOW_KAFKA__MAX_MESSAGE_BYTES
  value: {{ $k.maxMessageBytes | int64 | quote }}
{{- if $k.tls.existingSecret }}
- name: EHRFLOW_KAFKA__SSL_CA_FILE
  value: /etc/ehrflow/kafka-tls/ca.crt
{{- if $k.tls.clientCertificate }}
- name: EHRFLOW_KAFKA__SSL_CERT_FILE
  value: /etc/ehrflow/kafka-tls/tls.crt
- name: EHRFLOW_KAFKA__SSL_KEY_FILE
  value: /etc/ehrflow/kafka-tls/tls.key
{{- end }}
{{- end }}
{{- if hasPrefix "SASL_" $k.securityProtocol }}
- name: EHRFLOW_KAFKA__SASL_MECHANISM
  value: {{ $k.sasl.mechanism | quote }}
- name: EHRFLOW_KAFKA__SASL_USERNAME
  value: {{ required "kafka.sasl.username is required with a SASL_* securityProtocol" $k.sasl.username | quote }}
- name: EHRFLOW_KAFKA__SASL_PASSWORD_FILE
  value: /etc/ehrflow/kafka-sasl/password
{{- end }}
{{- end }}

{{- define "ehrflow.kafkaVolumes" -}}
{{- $k := .Values.kafka }}
{{- if $k.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ $k.tls.existingSecret }}
{{- end }}
{{- if hasPrefix "SASL_" $k.securityProtocol }}
- name: kafka-sasl
  secret:
    secretName: {{ required "kafka.sasl.passwordSecret.name is required with a SASL_* securityProtocol" $k.sasl.passwordSecret.name }}
    items:
      - key: {{ $k.sasl.passwordSecret.key }}
        path: password
{{- end }}
{{- end }}

{{- define "ehrflow.kafkaVolumeMounts" -}}
{{- $k := .Values.kafka }}
{{- if $k.tls.existingSecret }}
- name: kafka-tls
  mountPath: /etc/ehrflow/kafka-tls
  readOnly: true
{{- end }}
{{- if hasPrefix "SASL_" $k.securityProtocol }}
- name: kafka-sasl
  mountPath: /etc/ehrflow/kafka-sasl
  readOnly: true
{{- end }}
{{- end }}

{{/* The restricted Pod Security Standard, for every pod the chart makes. */}}
{{- define "ehrflow.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "ehrflow.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Values that cannot work together stop the install with a message naming them. */}}
{{- define "ehrflow.validate" -}}
{{- $s := .Values.services }}
{{- if and (not $s.auth.enabled) (or $s.inference.enabled $s.writeback.enabled) }}
{{- fail "services.inference and services.writeback need services.auth (their EHR tokens come from it)" }}
{{- end }}
{{- if not .Values.config.organizations }}
{{- fail "config.organizations is empty: ehrflow needs at least one organization (see the README's organization file reference)" }}
{{- end }}
{{- if and (ne .Values.exposure.type "none") (not .Values.exposure.host) }}
{{- fail (printf "exposure.host is required with exposure.type %s" .Values.exposure.type) }}
{{- end }}
{{- if and (eq .Values.kafka.topics "strimzi") (not .Values.kafka.strimziCluster) }}
{{- fail "kafka.strimziCluster is required with kafka.topics strimzi" }}
{{- end }}
{{- if and .Values.externalSecrets.enabled (not .Values.externalSecrets.secretStoreRef.name) }}
{{- fail "externalSecrets.secretStoreRef.name is required with externalSecrets.enabled" }}
{{- end }}
{{- end }}
