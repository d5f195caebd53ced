output "name" {
  description = "The cluster's name."
  value       = var.name
}

output "endpoint" {
  description = "The Kubernetes API endpoint."
  value       = aws_eks_cluster.this.endpoint
}

output "ca_certificate" {
  description = "The API server's CA certificate (base64 PEM)."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "oidc_issuer_url" {
  description = "The cluster's OIDC issuer, for workload identity (external-secrets)."
  value       = aws_eks_cluster.this.identity[0].oidc[0].issuer
}

output "subnet_ids" {
  description = "Private subnets node pools use."
  value       = aws_subnet.private[*].id
}

output "node_role_arn" {
  description = "The role node pools run as."
  value       = aws_iam_role.node.arn
}
