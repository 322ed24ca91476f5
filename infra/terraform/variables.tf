variable "bucket_name" {
  description = "Name of the S3 bucket that holds the model registry (globally unique)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be 3-63 characters of lowercase letters, digits, dots and hyphens."
  }
}

variable "registry_prefix" {
  description = "Key prefix of the registry inside the bucket: TIDEMARK_REGISTRY_URI becomes s3://<bucket_name>/<registry_prefix>."
  type        = string
  default     = "models"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", var.registry_prefix))
    error_message = "registry_prefix must be a relative key prefix without leading or trailing slashes, such as \"models\" or \"prod/models\"."
  }
}

variable "report_retention_days" {
  description = "Days after which drift reports under <registry_prefix>/monitoring/ expire (and overwritten copies are removed)."
  type        = number
  default     = 90

  validation {
    condition     = var.report_retention_days >= 1 && floor(var.report_retention_days) == var.report_retention_days
    error_message = "report_retention_days must be a whole number of days, at least 1."
  }
}

variable "kms_key_arn" {
  description = "KMS key for server-side encryption; null encrypts with S3-managed keys (AES256)."
  type        = string
  default     = null
}

variable "worker_role_name" {
  description = "Name of the IAM role that the Airflow workers assume."
  type        = string
  default     = "tidemark-airflow-worker"
}

variable "worker_trusted_services" {
  description = "AWS services allowed to assume the worker role (EC2 instances by default); [] drops the EC2 trust, for example on EKS with eks_oidc_provider_arn set."
  type        = list(string)
  default     = ["ec2.amazonaws.com"]
}

variable "worker_trusted_arns" {
  description = "Other principals (role or account ARNs) allowed to assume the worker role, for example a CI runner."
  type        = list(string)
  default     = []
}

variable "eks_oidc_provider_arn" {
  description = "IAM OIDC provider of the EKS cluster (arn:aws:iam::<account>:oidc-provider/oidc.eks.<region>.amazonaws.com/id/<id>); set it to let eks_service_accounts assume the worker role through IRSA. null adds no such trust."
  type        = string
  default     = null

  validation {
    condition     = var.eks_oidc_provider_arn == null || can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/[^/\\s]+(/[^/\\s]+)*$", var.eks_oidc_provider_arn))
    error_message = "eks_oidc_provider_arn must be the ARN of an IAM OIDC provider, such as arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE, or null."
  }
}

variable "eks_service_accounts" {
  description = "Kubernetes service accounts, as \"<namespace>:<name>\", that may assume the worker role through eks_oidc_provider_arn. The default is the two Celery worker sets of infra/airflow/values.yaml."
  type        = list(string)
  default     = ["airflow:tidemark-worker", "airflow:tidemark-worker-gpu"]

  validation {
    condition     = alltrue([for account in var.eks_service_accounts : can(regex("^[a-z0-9]([a-z0-9-]*[a-z0-9])?:[a-z0-9]([a-z0-9.-]*[a-z0-9])?$", account))])
    error_message = "Each of eks_service_accounts must be \"<namespace>:<name>\" in Kubernetes name syntax, such as \"airflow:tidemark-worker\"; wildcards are not accepted."
  }
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete a bucket that still holds objects. Keep false outside tests."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "region" {
  description = "AWS region of the bucket."
  type        = string
  default     = "us-east-1"
}

variable "s3_endpoint" {
  description = "Override of the S3 endpoint URL, for an emulator such as moto; null uses AWS."
  type        = string
  default     = null
}

variable "iam_endpoint" {
  description = "Override of the IAM endpoint URL; null uses AWS."
  type        = string
  default     = null
}

variable "sts_endpoint" {
  description = "Override of the STS endpoint URL; null uses AWS."
  type        = string
  default     = null
}

variable "local_endpoint" {
  description = "Set when the endpoints point at an emulator: path-style S3 URLs, no credential, account-id or instance-metadata lookups."
  type        = bool
  default     = false
}
