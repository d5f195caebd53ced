# AWS Secrets Manager. Terraform creates the secrets and the operator's
# read-only role; their values are put in out of band, never in state.

resource "aws_secretsmanager_secret" "this" {
  for_each                = toset(var.secret_names)
  name                    = each.value
  recovery_window_in_days = var.recovery_window_days
  tags                    = merge(var.tags, { environment = var.environment })
}

locals {
  issuer = replace(var.oidc_issuer_url, "https://", "")
}

data "aws_caller_identity" "current" {}

resource "aws_iam_role" "external_secrets" {
  name = "dark-tower-${var.environment}-external-secrets"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Federated = "arn:aws:iam::${data.aws_caller_identity.current.account_id}:oidc-provider/${local.issuer}" }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = { StringEquals = { "${local.issuer}:sub" = "system:serviceaccount:external-secrets:external-secrets" } }
    }]
  })
  tags = var.tags
}

resource "aws_iam_role_policy" "read" {
  name = "read-dark-tower-secrets"
  role = aws_iam_role.external_secrets.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
      Resource = [for s in aws_secretsmanager_secret.this : s.arn]
    }]
  })
}
