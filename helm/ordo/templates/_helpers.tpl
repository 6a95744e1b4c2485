{{/* Chart name. */}}
{{- define "ordo.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name. */}}
{{- define "ordo.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* N = servers × containers: the one partition count of every topic. */}}
{{- define "ordo.partitions" -}}
{{- mul (int .Values.servers) (int .Values.containers) -}}
{{- end -}}

{{/* Standard labels. */}}
{{- define "ordo.labels" -}}
app.kubernetes.io/name: {{ include "ordo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ordo
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels. */}}
{{- define "ordo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ordo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The image reference. */}}
{{- define "ordo.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Kafka settings every ordo container gets, from the ConfigMap. */}}
{{- define "ordo.kafkaEnv" -}}
- name: ORDO_BROKERS
  valueFrom: {configMapKeyRef: {name: {{ include "ordo.fullname" . }}, key: brokers}}
- name: ORDO_KAFKA_PROPERTIES
  valueFrom: {configMapKeyRef: {name: {{ include "ordo.fullname" . }}, key: kafka-properties}}
- name: ORDO_TOPIC_PREFIX
  valueFrom: {configMapKeyRef: {name: {{ include "ordo.fullname" . }}, key: topic-prefix}}
- name: ORDO_PARTITIONER
  value: {{ .Values.partitioner | quote }}
- name: ORDO_LOG
  value: {{ .Values.log | quote }}
{{- end -}}
