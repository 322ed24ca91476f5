output "bucket_name" {
  description = "The registry bucket."
  value       = aws_s3_bucket.registry.id
}

output "registry_uri" {
  description = "Value for TIDEMARK_REGISTRY_URI."
  value       = "s3://${aws_s3_bucket.registry.id}/${var.registry_prefix}"
}

output "policy_arn" {
  description = "Managed policy that grants the registry prefix and nothing else; attach it to other principals as needed."
  value       = aws_iam_policy.registry_access.arn
}

output "role_name" {
  description = "IAM role of the Airflow workers."
  value       = aws_iam_role.worker.name
}

output "role_arn" {
  description = "ARN of the worker role, for trust relationships (for example an EKS service account annotation)."
  value       = aws_iam_role.worker.arn
}

output "instance_profile_name" {
  description = "Instance profile carrying the worker role, for EC2 workers (null without the EC2 trust)."
  value       = one(aws_iam_instance_profile.worker[*].name)
}
