# Cloud-agnostic interface: what any Dark Tower cluster needs. The
# implementation for each cloud lives beside it (aws.tf today).

variable "cloud" {
  description = "Which implementation to use. Implemented: aws."
  type        = string
  validation {
    condition     = contains(["aws"], var.cloud)
    error_message = "cloud must be one of: aws (gcp and azure implement the same interface when added)."
  }
}

variable "name" {
  description = "Cluster name, e.g. dark-tower-prod."
  type        = string
}

variable "region" {
  description = "Cloud region, e.g. us-west-2."
  type        = string
}

variable "kubernetes_version" {
  description = "Kubernetes minor version, e.g. 1.33 (Pod Security Admission needs 1.25+)."
  type        = string
}

variable "network_cidr" {
  description = "The cluster network's CIDR."
  type        = string
}

variable "availability_zones" {
  description = "Zones to spread nodes across (at least 2)."
  type        = list(string)
  validation {
    condition     = length(var.availability_zones) >= 2
    error_message = "availability_zones needs at least 2 zones."
  }
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
