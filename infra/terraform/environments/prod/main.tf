# prod: wires the cloud-agnostic modules together (AWS implementation).
# Node pools are sized from ADR-0012's resource table: the general pool
# holds AC, GC and MC (largest limit: MC, 4 CPU / 8 GiB), the dedicated
# media pool holds MH only (limit 8 CPU / 16 GiB), one per node with room
# for the node's own daemons.

locals {
  name = "dark-tower-prod"
  tags = { project = "dark-tower", environment = "prod", managed-by = "terraform" }
  # The remote keys infra/'s ExternalSecrets read (policy/ checks the list).
  secret_names = [
    "dark-tower-ac-service",
    "dark-tower-global-controller",
    "dark-tower-meeting-controller",
    "dark-tower-media-handler",
    "dark-tower-redis",
    "dark-tower-internal-ca",
    "dark-tower-ac-service-tls",
    "dark-tower-global-controller-tls",
    "dark-tower-meeting-controller-tls",
    "dark-tower-media-handler-tls",
    "dark-tower-postgresql-ac",
    "dark-tower-postgresql-gc",
    "dark-tower-postgresql-backup",
    "dark-tower-grafana",
  ]
}

module "cluster" {
  source             = "../../modules/kubernetes-cluster"
  cloud              = "aws"
  name               = local.name
  region             = "us-west-2"
  kubernetes_version = "1.33"
  network_cidr       = "10.30.0.0/16"
  availability_zones = ["us-west-2a", "us-west-2b", "us-west-2c"]
  tags               = local.tags
}

module "general_pool" {
  source          = "../../modules/node-pool"
  cloud           = "aws"
  cluster_name    = module.cluster.name
  name            = "general"
  instance_type   = "m6i.2xlarge"
  node_vcpu       = 8
  node_memory_gib = 32
  min_size        = 3
  max_size        = 12
  subnet_ids      = module.cluster.subnet_ids
  node_role_arn   = module.cluster.node_role_arn
  tags            = local.tags
}

module "media_pool" {
  source          = "../../modules/node-pool"
  cloud           = "aws"
  cluster_name    = module.cluster.name
  name            = "media"
  instance_type   = "c6i.4xlarge"
  node_vcpu       = 16
  node_memory_gib = 32
  min_size        = 2
  max_size        = 20
  dedicated       = true
  subnet_ids      = module.cluster.subnet_ids
  node_role_arn   = module.cluster.node_role_arn
  tags            = local.tags
}

module "secrets" {
  source               = "../../modules/secrets-backend"
  cloud                = "aws"
  environment          = "prod"
  oidc_issuer_url      = module.cluster.oidc_issuer_url
  secret_names         = local.secret_names
  recovery_window_days = 30
  tags                 = local.tags
}

output "cluster_endpoint" {
  value = module.cluster.endpoint
}

output "external_secrets_role_arn" {
  value = module.secrets.operator_role_arn
}

output "secret_store_directory" {
  value = "infra/platform/external-secrets/stores/${module.secrets.store_directory}"
}
