package policy

// Structural checks for the CRDs whose Go types are not available from the
// Go module proxy here (CloudNativePG: its module is not served; Litmus's
// types are declared in litmus.go) or do not build against this module's Kubernetes libraries
// (external-secrets v0.16.2's apis need an older controller-runtime). The
// allowed spec fields are taken from each project's CRD reference for the
// pinned chart version (infra/platform/charts.yaml).
func init() {
	// CloudNativePG 1.27 (chart 0.26.0), postgresql.cnpg.io/v1.
	registerShape("postgresql.cnpg.io/v1/Cluster", shape{
		required: []string{"spec.instances", "spec.storage.size"},
		specAllowed: []string{"affinity", "backup", "bootstrap", "certificates", "description", "enablePDB", "enableSuperuserAccess",
			"env", "envFrom", "ephemeralVolumeSource", "ephemeralVolumesSizeLimit", "externalClusters", "failoverDelay", "imageCatalogRef",
			"imageName", "imagePullPolicy", "imagePullSecrets", "inheritedMetadata", "instances", "livenessProbeTimeout", "logLevel",
			"managed", "maxSyncReplicas", "minSyncReplicas", "monitoring", "nodeMaintenanceWindow", "plugins", "podSecurityContext",
			"postgresGID", "postgresUID", "postgresql", "primaryUpdateMethod", "primaryUpdateStrategy", "priorityClassName", "probes",
			"projectedVolumeTemplate", "replica", "replicationSlots", "resources", "schedulerName", "seccompProfile", "securityContext",
			"serviceAccountTemplate", "smartShutdownTimeout", "startDelay", "stopDelay", "storage", "superuserSecret",
			"switchoverDelay", "tablespaces", "topologySpreadConstraints", "walStorage"},
	})
	registerShape("postgresql.cnpg.io/v1/Pooler", shape{
		required:    []string{"spec.cluster.name", "spec.pgbouncer.poolMode", "spec.type"},
		specAllowed: []string{"cluster", "deploymentStrategy", "instances", "monitoring", "pgbouncer", "serviceTemplate", "template", "type"},
	})
	registerShape("postgresql.cnpg.io/v1/ScheduledBackup", shape{
		required:    []string{"spec.schedule", "spec.cluster.name"},
		specAllowed: []string{"backupOwnerReference", "cluster", "immediate", "method", "online", "onlineConfiguration", "pluginConfiguration", "schedule", "suspend", "target"},
	})
	registerShape("postgresql.cnpg.io/v1/Database", shape{
		required: []string{"spec.cluster.name", "spec.name", "spec.owner"},
		specAllowed: []string{"allowConnections", "builtinLocale", "cluster", "collationVersion", "connectionLimit", "databaseReclaimPolicy",
			"encoding", "ensure", "extensions", "icuLocale", "icuRules", "isTemplate", "locale", "localeCType", "localeCollate",
			"localeProvider", "name", "owner", "schemas", "tablespace", "template"},
	})
	// external-secrets v0.16 (chart 0.16.2), external-secrets.io/v1beta1.
	registerShape("external-secrets.io/v1beta1/ClusterSecretStore", shape{
		required:    []string{"spec.provider"},
		specAllowed: []string{"conditions", "controller", "provider", "refreshInterval", "retrySettings"},
	})
	registerShape("external-secrets.io/v1beta1/ExternalSecret", shape{
		required:    []string{"spec.secretStoreRef.name", "spec.refreshInterval", "spec.target.name"},
		specAllowed: []string{"data", "dataFrom", "refreshInterval", "refreshPolicy", "secretStoreRef", "target"},
	})
}
