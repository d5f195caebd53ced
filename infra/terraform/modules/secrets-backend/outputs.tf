output "store_directory" {
  description = "The ClusterSecretStore to apply: infra/platform/external-secrets/stores/<this>."
  value       = var.cloud
}

output "operator_role_arn" {
  description = "Annotate the external-secrets service account with this role (eks.amazonaws.com/role-arn)."
  value       = aws_iam_role.external_secrets.arn
}

output "secret_arns" {
  description = "The secrets, by name (values are set out of band, never by Terraform)."
  value       = { for k, s in aws_secretsmanager_secret.this : k => s.arn }
}
