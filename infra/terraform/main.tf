# The registry bucket. Layout of the keys the registry writes under <registry_prefix>/ (see ml/registry/registry.py):
#   <model>/versions/vNNNN/...            write-once artifacts and manifest.json
#   <model>/aliases/<alias>.json          rewritten by compare-and-swap (If-Match on the ETag)
#   <model>/records/<kind>/<name>.json    write-once decisions and evaluations
#   monitoring/<model>/<day>/report.*     drift reports, overwritten on rerun, expired by the rule below

locals {
  monitoring_prefix = "${var.registry_prefix}/monitoring/"
}

resource "aws_s3_bucket" "registry" {
  bucket        = var.bucket_name
  force_destroy = var.force_destroy
}

# Every overwritten alias keeps its earlier version, so a bad write can be undone from S3 itself.
resource "aws_s3_bucket_versioning" "registry" {
  bucket = aws_s3_bucket.registry.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "registry" {
  bucket = aws_s3_bucket.registry.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

resource "aws_s3_bucket_public_access_block" "registry" {
  bucket = aws_s3_bucket.registry.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# ACLs off: access is decided by IAM and the bucket policy alone.
resource "aws_s3_bucket_ownership_controls" "registry" {
  bucket = aws_s3_bucket.registry.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "registry" {
  bucket = aws_s3_bucket.registry.id

  rule {
    id     = "expire-monitoring-reports"
    status = "Enabled"

    filter {
      prefix = local.monitoring_prefix
    }

    expiration {
      days = var.report_retention_days
    }

    # A rerun overwrites a day's report; the copy it replaced is kept one day, then removed.
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.registry]
}

data "aws_iam_policy_document" "tls_only" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.registry.arn, "${aws_s3_bucket.registry.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "registry" {
  bucket = aws_s3_bucket.registry.id
  policy = data.aws_iam_policy_document.tls_only.json

  depends_on = [aws_s3_bucket_public_access_block.registry]
}
