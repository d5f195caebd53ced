# Cloud-agnostic interface of the secrets backend external-secrets reads:
# the secrets Dark Tower's ExternalSecrets name, and the workload identity
# the operator uses to read them.

variable "cloud" {
  description = "Which implementation to use (and which infra/platform/external-secrets/stores/<cloud> to apply). Implemented: aws."
  type        = string
  validation {
    condition     = contains(["aws"], var.cloud)
    error_message = "cloud must be one of: aws."
  }
}

variable "environment" {
  description = "Environment name (dev, staging, prod)."
  type        = string
}

variable "oidc_issuer_url" {
  description = "The cluster's OIDC issuer (kubernetes-cluster's oidc_issuer_url)."
  type        = string
}

variable "secret_names" {
  description = "The remote keys the ExternalSecrets in infra/ read."
  type        = list(string)
}

variable "recovery_window_days" {
  description = "How long a deleted secret can be restored."
  type        = number
  default     = 7
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
