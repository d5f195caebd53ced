# Cloud-agnostic interface of a node pool. Sized per environment from
# ADR-0012's resource table (environments/*/main.tf); the media pool is
# labelled and tainted so only media-handler lands there.

variable "cloud" {
  description = "Which implementation to use. Implemented: aws."
  type        = string
  validation {
    condition     = contains(["aws"], var.cloud)
    error_message = "cloud must be one of: aws."
  }
}

variable "cluster_name" {
  description = "The cluster (kubernetes-cluster module's name output)."
  type        = string
}

variable "name" {
  description = "Pool name; also the darktower.io/pool label value (general, media)."
  type        = string
}

variable "instance_type" {
  description = "Machine type."
  type        = string
}

variable "node_vcpu" {
  description = "vCPUs of instance_type (checked against the largest pod the pool must hold)."
  type        = number
}

variable "node_memory_gib" {
  description = "Memory of instance_type in GiB."
  type        = number
}

variable "min_size" {
  description = "Minimum nodes."
  type        = number
}

variable "max_size" {
  description = "Maximum nodes."
  type        = number
  validation {
    condition     = var.max_size >= 1
    error_message = "max_size must be at least 1."
  }
}

variable "dedicated" {
  description = "Taint the pool (darktower.io/pool=<name>:NoSchedule) so only pods tolerating it run there."
  type        = bool
  default     = false
}

variable "subnet_ids" {
  description = "Subnets for the nodes (kubernetes-cluster's subnet_ids)."
  type        = list(string)
}

variable "node_role_arn" {
  description = "Role the nodes run as (kubernetes-cluster's node_role_arn)."
  type        = string
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
