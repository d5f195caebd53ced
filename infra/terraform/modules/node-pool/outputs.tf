output "name" {
  description = "The pool's name (its darktower.io/pool label)."
  value       = var.name
}

output "labels" {
  description = "Labels every node of the pool carries."
  value       = local.labels
}

output "taints" {
  description = "Taints on the pool's nodes (none unless dedicated)."
  value       = local.taints
}
