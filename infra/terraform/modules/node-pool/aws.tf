locals {
  labels = { "darktower.io/pool" = var.name }
  taints = var.dedicated ? [{ key = "darktower.io/pool", value = var.name, effect = "NO_SCHEDULE" }] : []
}

resource "aws_eks_node_group" "this" {
  cluster_name    = var.cluster_name
  node_group_name = var.name
  node_role_arn   = var.node_role_arn
  subnet_ids      = var.subnet_ids
  instance_types  = [var.instance_type]
  labels          = local.labels

  scaling_config {
    min_size     = var.min_size
    desired_size = var.min_size
    max_size     = var.max_size
  }

  dynamic "taint" {
    for_each = local.taints
    content {
      key    = taint.value.key
      value  = taint.value.value
      effect = taint.value.effect
    }
  }

  update_config {
    max_unavailable = 1
  }

  tags = var.tags
}
