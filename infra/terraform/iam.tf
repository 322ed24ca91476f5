# What the Airflow workers may do: exactly the S3 calls of ml/registry/stores.py, on the registry prefix only.
#   list_objects_v2 (Prefix=<registry_prefix>/...)        -> s3:ListBucket, conditioned on s3:prefix
#   get_object, head_object                               -> s3:GetObject
#   put_object, with or without If-None-Match / If-Match  -> s3:PutObject
# The registry never deletes or copies, so the workers cannot either. With s3:ListBucket granted, S3
# answers 404 rather than 403 for a missing key under the prefix, which the registry relies on.

data "aws_iam_policy_document" "registry_access" {
  statement {
    sid       = "ListRegistryPrefix"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.registry.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.registry_prefix}/*"]
    }
  }

  statement {
    sid       = "ReadWriteRegistryObjects"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${aws_s3_bucket.registry.arn}/${var.registry_prefix}/*"]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]

    content {
      sid       = "UseRegistryKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_policy" "registry_access" {
  name        = "${var.worker_role_name}-registry"
  description = "Read and write the Tidemark model registry at s3://${var.bucket_name}/${var.registry_prefix}/ and nothing else."
  policy      = data.aws_iam_policy_document.registry_access.json
}

# Who may assume the worker role: the services and principals of worker_trusted_* (EC2 by default)
# and, with eks_oidc_provider_arn set, exactly the service accounts of eks_service_accounts through
# IRSA. The issuer in the condition keys is the provider ARN after "oidc-provider/".
locals {
  worker_trusted_principals = {
    for type, ids in { Service = var.worker_trusted_services, AWS = var.worker_trusted_arns } : type => ids if length(ids) > 0
  }
  eks_oidc_issuer = var.eks_oidc_provider_arn == null ? null : element(split(":oidc-provider/", var.eks_oidc_provider_arn), 1)
}

data "aws_iam_policy_document" "worker_trust" {
  dynamic "statement" {
    for_each = length(local.worker_trusted_principals) > 0 ? [local.worker_trusted_principals] : []

    content {
      actions = ["sts:AssumeRole"]

      dynamic "principals" {
        for_each = statement.value

        content {
          type        = principals.key
          identifiers = principals.value
        }
      }
    }
  }

  dynamic "statement" {
    for_each = local.eks_oidc_issuer == null ? [] : [local.eks_oidc_issuer]

    content {
      sid     = "EksServiceAccounts"
      actions = ["sts:AssumeRoleWithWebIdentity"]

      principals {
        type        = "Federated"
        identifiers = [var.eks_oidc_provider_arn]
      }

      condition {
        test     = "StringEquals"
        variable = "${statement.value}:sub"
        values   = [for account in var.eks_service_accounts : "system:serviceaccount:${account}"]
      }

      condition {
        test     = "StringEquals"
        variable = "${statement.value}:aud"
        values   = ["sts.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role" "worker" {
  name                 = var.worker_role_name
  description          = "Airflow workers of Tidemark: access to the model registry only."
  assume_role_policy   = data.aws_iam_policy_document.worker_trust.json
  max_session_duration = 3600

  lifecycle {
    precondition {
      condition     = length(local.worker_trusted_principals) > 0 || var.eks_oidc_provider_arn != null
      error_message = "Nobody could assume the worker role: set eks_oidc_provider_arn, or keep at least one of worker_trusted_services and worker_trusted_arns."
    }

    precondition {
      condition     = var.eks_oidc_provider_arn == null || length(var.eks_service_accounts) > 0
      error_message = "eks_oidc_provider_arn is set but eks_service_accounts is empty: list the \"<namespace>:<name>\" accounts that may assume the role."
    }
  }
}

resource "aws_iam_role_policy_attachment" "worker_registry" {
  role       = aws_iam_role.worker.name
  policy_arn = aws_iam_policy.registry_access.arn
}

# For workers on EC2, so only while worker_trusted_services holds ec2.amazonaws.com; EKS pods assume
# the role through IRSA (eks_oidc_provider_arn) instead.
resource "aws_iam_instance_profile" "worker" {
  count = contains(var.worker_trusted_services, "ec2.amazonaws.com") ? 1 : 0
  name  = var.worker_role_name
  role  = aws_iam_role.worker.name
}
