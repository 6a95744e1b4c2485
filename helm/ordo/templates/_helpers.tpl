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

{{/*
librdkafka properties as ORDO_KAFKA_PROPERTIES (key=value,…): kafka.properties, then each of
kafka.secretProperties as `key=@env:ORDO_KAFKA_SECRET_<i>`, a reference to a variable set from
its Secret (ordo.kafkaSecretEnv): no secret value is ever in a ConfigMap or a pod spec. A
property that holds a secret is refused in kafka.properties.
*/}}
{{- define "ordo.kafkaProperties" -}}
{{- $props := list }}
{{- $secretish := list "sasl.password" "ssl.key.password" "ssl.keystore.password" "sasl.oauthbearer.client.secret" "ssl.key.pem" "ssl_key" "sasl.oauthbearer.config" }}
{{- range $k, $v := .Values.kafka.properties }}
{{- if has $k $secretish }}
{{- fail (printf "kafka.properties.%s holds a secret: give it in kafka.secretProperties (a Secret's key), never in plain values" $k) }}
{{- end }}
{{- $props = append $props (printf "%s=%v" $k $v) }}
{{- end }}
{{- range $i, $k := keys .Values.kafka.secretProperties | sortAlpha }}
{{- $props = append $props (printf "%s=@env:ORDO_KAFKA_SECRET_%d" $k $i) }}
{{- end }}
{{- join "," $props }}
{{- end -}}

{{/* The variables kafka.secretProperties refer to, each from its Secret's key. */}}
{{- define "ordo.kafkaSecretEnv" -}}
{{- range $i, $k := keys .Values.kafka.secretProperties | sortAlpha }}
{{- $ref := index $.Values.kafka.secretProperties $k }}
- name: ORDO_KAFKA_SECRET_{{ $i }}
  valueFrom: {secretKeyRef: {name: {{ $ref.secret | quote }}, key: {{ $ref.key | quote }}}}
{{- end }}
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
{{- include "ordo.kafkaSecretEnv" . }}
{{- end -}}
