# With every endpoint variable left null the provider talks to AWS as usual. The tests point all three
# at a local S3/IAM/STS emulator and set local_endpoint, which also skips the calls only AWS answers.
provider "aws" {
  region = var.region

  endpoints {
    s3  = var.s3_endpoint
    iam = var.iam_endpoint
    sts = var.sts_endpoint
  }

  s3_use_path_style           = var.local_endpoint
  skip_credentials_validation = var.local_endpoint
  skip_requesting_account_id  = var.local_endpoint
  skip_metadata_api_check     = var.local_endpoint

  default_tags {
    tags = merge({ project = "tidemark", component = "model-registry" }, var.tags)
  }
}
