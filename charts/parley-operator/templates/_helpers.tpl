{{/*
Chart name, for the app.kubernetes.io/name label.
*/}}
{{- define "parley-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: prefixes every object name. Truncated to 63 characters (DNS label).
A release name that already contains the chart name is used as is.
*/}}
{{- define "parley-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "parley-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "parley-operator.labels" -}}
helm.sh/chart: {{ include "parley-operator.chart" . }}
{{ include "parley-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: parley
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels that select the operator pods (immutable once installed).
*/}}
{{- define "parley-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "parley-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The operator's ServiceAccount.
*/}}
{{- define "parley-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "parley-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The leader-election Lease's name.
*/}}
{{- define "parley-operator.leaseName" -}}
{{- default (include "parley-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
The container image: by digest when one is given, else by tag (default appVersion).
*/}}
{{- define "parley-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
API version of PodDisruptionBudget: policy/v1 where the cluster serves it
(Kubernetes 1.21+), policy/v1beta1 before. Against a cluster, helm's
discovery lists "policy/v1/PodDisruptionBudget" exactly when it is served.
Without a cluster (`helm template`) helm assumes every group/version it knows
but lists no kinds, so the Kubernetes version (`--kube-version`) decides;
`--api-versions policy/v1/PodDisruptionBudget` forces policy/v1.
*/}}
{{- define "parley-operator.pdbApiVersion" -}}
{{- if or (.Capabilities.APIVersions.Has "policy/v1/PodDisruptionBudget") (and (.Capabilities.APIVersions.Has "policy/v1") (semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version)) }}
{{- "policy/v1" }}
{{- else }}
{{- "policy/v1beta1" }}
{{- end }}
{{- end }}

{{/*
Refuses settings that cannot work.
*/}}
{{- define "parley-operator.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true: several operators without a Lease would reconcile the same ChatClusters at once" }}
{{- end }}
{{- if lt (int .Values.replicaCount) 0 }}
{{- fail "replicaCount must not be negative" }}
{{- end }}
{{- end }}

{{/*
The operator's rules on the kinds it manages in a namespace, Secrets
included. Keep equal to operator/rbac/clusterrole.yaml without its last rule
(operator/tests/chart.rs compares them).
*/}}
{{- define "parley-operator.namespacedRules" -}}
# patch: only the finalizer parley.dev/delete-volumes (volumeReclaim: Delete)
- apiGroups: ["parley.dev"]
  resources: ["chatclusters"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["parley.dev"]
  resources: ["chatclusters/status"]
  verbs: ["get", "patch", "update"]
# children set blockOwnerDeletion: clusters enforcing owner-reference
# permissions (OwnerReferencesPermissionEnforcement, OpenShift) require this
- apiGroups: ["parley.dev"]
  resources: ["chatclusters/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# no delete: the operator never deletes a Secret. (Where
# OwnerReferencesPermissionEnforcement is on, re-owning a kept
# `<name>-generated` would need it; see the README's Backups notes.)
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# delete: setting an ownerRef (volumeReclaim: Delete) needs it under
# OwnerReferencesPermissionEnforcement; the garbage collector deletes them
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies", "ingresses"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
The one cluster-scoped rule: whether a store volume's StorageClass allows
growing it in place (the last rule of operator/rbac/clusterrole.yaml).
*/}}
{{- define "parley-operator.clusterRules" -}}
- apiGroups: ["storage.k8s.io"]
  resources: ["storageclasses"]
  verbs: ["get"]
{{- end }}
