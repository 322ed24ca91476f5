"""The registry's Terraform module (infra/terraform): checked offline, then applied to moto over HTTP.

boto3 reads back what the apply made, and the registry contract suite of
tests/integration/test_registry.py runs again on the new bucket with the worker role's credentials
while moto enforces IAM. The EKS (IRSA) trust of the worker role is read from a plan made while the
apply runs. Terraform works on copies of the module in a temporary folder, so no `.terraform/`, lock
file or state lands in the repository.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from tests.integration import test_registry as contract
from tests.registry_backends import Backend
from tests.s3 import DUMMY_AWS_ENV

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "infra" / "terraform"
HELM_VALUES = ROOT / "infra" / "airflow" / "values.yaml"
MIRROR = Path(os.environ.get("TIDEMARK_TF_PLUGIN_MIRROR", "/opt/tf-plugins"))
PREFIX = "ml/models"
RETENTION_DAYS = 30
OIDC_ISSUER = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
OIDC_PROVIDER_ARN = f"arn:aws:iam::123456789012:oidc-provider/{OIDC_ISSUER}"

# The IAM action each S3 call of ml/registry/stores.py needs; the worker policy must grant exactly these.
S3_ACTIONS = {
    "get_object": "s3:GetObject",
    "head_object": "s3:GetObject",
    "put_object": "s3:PutObject",
    "list_objects_v2": "s3:ListBucket",
}


def _missing() -> str | None:
    if shutil.which("terraform") is None:
        return "terraform is not on PATH"
    if not any((MIRROR / "registry.terraform.io" / "hashicorp" / "aws").glob("5.*/*/terraform-provider-aws*")):
        return f"no hashicorp/aws 5.x provider in the plugin mirror {MIRROR} (set TIDEMARK_TF_PLUGIN_MIRROR)"
    return None


MISSING = _missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"skipping the infra/terraform tests: {MISSING}")


def _client(service: str, endpoint: str, **credentials: str):
    import boto3

    credentials = credentials or {"aws_access_key_id": DUMMY_AWS_ENV["AWS_ACCESS_KEY_ID"],
                                  "aws_secret_access_key": DUMMY_AWS_ENV["AWS_SECRET_ACCESS_KEY"]}
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1", **credentials)


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _error_code(call) -> str:
    from botocore.exceptions import ClientError

    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"]
    return "allowed"


class Terraform:
    """The terraform CLI on a private copy of the module, installing providers only from the mirror."""

    def __init__(self, home: Path, name: str = "module"):
        self.workdir = home / name
        self.workdir.mkdir()
        for path in MODULE.glob("*.tf"):
            shutil.copy2(path, self.workdir / path.name)
        config = home / "terraformrc"
        config.write_text(
            f'provider_installation {{\n  filesystem_mirror {{\n    path = "{MIRROR}"\n  }}\n'
            '  direct {\n    exclude = ["*/*/*"]\n  }\n}\n'
        )
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "AWS_"))}
        self.env = {
            **inherited, **DUMMY_AWS_ENV,
            "AWS_CONFIG_FILE": str(home / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
            "TF_CLI_CONFIG_FILE": str(config),
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "CHECKPOINT_DISABLE": "1",
        }
        self.log = home / f"{name}.log"
        self._apply: subprocess.Popen | None = None

    def share_providers(self, initialised: Terraform) -> None:
        """Use the providers another copy has installed, instead of a second `terraform init`."""
        (self.workdir / ".terraform").symlink_to(initialised.workdir / ".terraform", target_is_directory=True)
        shutil.copy2(initialised.workdir / ".terraform.lock.hcl", self.workdir)

    def _argv(self, args: tuple[str, ...]) -> list[str]:
        return ["terraform", f"-chdir={self.workdir}", *args, "-no-color"]

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(self._argv(args), env=self.env, input=stdin, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, f"terraform {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
        return result.stdout

    def start_apply(self, variables: dict[str, str]) -> None:
        argv = self._argv(("apply", "-auto-approve", "-input=false", *(f"-var={k}={v}" for k, v in variables.items())))
        with open(self.log, "w") as log:
            self._apply = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def wait_until_apply_idles(self) -> None:
        """Until the apply has begun its long wait on the lifecycle rule, or has ended.

        From then on it barely uses the CPU, so other terraform runs no longer slow it down.
        """
        deadline = time.monotonic() + 300
        while (self._apply.poll() is None and time.monotonic() < deadline
               and "aws_s3_bucket_lifecycle_configuration.registry: Creating..." not in self.log.read_text()):
            time.sleep(0.5)

    def wait_applied(self) -> dict[str, str]:
        """The module's outputs once the apply has finished."""
        try:
            code = self._apply.wait(timeout=300)
        except subprocess.TimeoutExpired:
            self.stop()
            code = "timeout"
        assert code == 0, f"terraform apply failed ({code}):\n{self.log.read_text()[-4000:]}"
        return {name: out["value"] for name, out in json.loads(self("output", "-json")).items()}

    def stop(self) -> None:
        if self._apply is not None and self._apply.poll() is None:
            self._apply.kill()
            self._apply.wait()


@pytest.fixture(scope="module")
def terraform(tmp_path_factory, s3_server) -> Iterator[Terraform]:
    """The module initialised offline, its apply to moto already started in the background.

    Most of an apply is the provider waiting for the lifecycle rule to read back unchanged (about
    55 s), so the static checks run meanwhile. Nothing is destroyed: moto lives only as long as
    the session, and the names are unique to this run.
    """
    tf = Terraform(tmp_path_factory.mktemp("terraform"))
    tf("init", "-backend=false", "-input=false")
    run = uuid.uuid4().hex[:10]
    tf.start_apply({
        "bucket_name": f"tidemark-tf-{run}", "registry_prefix": PREFIX, "report_retention_days": str(RETENTION_DAYS),
        "worker_role_name": f"tidemark-worker-{run}", "force_destroy": "true", "local_endpoint": "true",
        "s3_endpoint": s3_server, "iam_endpoint": s3_server, "sts_endpoint": s3_server,
    })
    yield tf
    tf.stop()


@pytest.fixture(scope="module")
def stack(terraform, s3_server) -> dict:
    """The module's outputs, plus what its TLS-only bucket policy said before the tests lifted it.

    moto serves plain HTTP, which that policy refuses, so it is read, shown to refuse one write, and
    deleted; everything after that talks to the bucket over HTTP.
    """
    outputs = terraform.wait_applied()
    s3, bucket = _client("s3", s3_server), outputs["bucket_name"]
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    refused = _error_code(lambda: s3.put_object(Bucket=bucket, Key=f"{PREFIX}/plain-http.txt", Body=b"x"))
    s3.delete_bucket_policy(Bucket=bucket)
    return {**outputs, "bucket_policy": policy, "plain_http_write": refused}


@pytest.fixture(scope="module")
def worker_credentials(stack, s3_server) -> dict[str, str]:
    """Temporary credentials of the worker role, as environment variables."""
    sts = _client("sts", s3_server)
    creds = sts.assume_role(RoleArn=stack["role_arn"], RoleSessionName="airflow-worker")["Credentials"]
    return {"AWS_ACCESS_KEY_ID": creds["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
            "AWS_SESSION_TOKEN": creds["SessionToken"]}


def test_module_is_formatted_and_valid_offline(terraform):
    assert terraform("fmt", "-check", "-diff", "-recursive") == ""
    result = json.loads(terraform("validate", "-json"))
    assert (result["valid"], result["error_count"], result["warning_count"]) == (True, 0, 0), result["diagnostics"]


def _planned(terraform: Terraform, expression: str, variables: dict[str, str]):
    """The planned value of a string expression that holds JSON, under these variables, decoded.

    `terraform console -plan` plans and evaluates in one run, about half the time of a plan and its
    `show -json`. It prints the string HCL-quoted, which reads as JSON.
    """
    argv = ("console", "-plan", *(f"-var={k}={v}" for k, v in variables.items()))
    return json.loads(json.loads(terraform(*argv, stdin=f"{expression}\n")))


def _helm_worker_service_accounts() -> list[str]:
    """The worker service accounts that infra/airflow/values.yaml annotates for IRSA, as "<namespace>:<name>"."""
    text = HELM_VALUES.read_text()
    namespace = re.search(r"--namespace (\S+)", text)
    assert namespace, f"found no `--namespace` in the install command of {HELM_VALUES}; update the pattern above"
    celery = yaml.safe_load(text)["workers"]["celery"]
    accounts = [celery["serviceAccount"], *(worker_set["serviceAccount"] for worker_set in celery.get("sets", [])
                                            if "serviceAccount" in worker_set)]
    return [f"{namespace[1]}:{a['name']}" for a in accounts if "eks.amazonaws.com/role-arn" in a.get("annotations", {})]


def test_eks_service_accounts_alone_may_assume_the_worker_role_by_web_identity(terraform, tmp_path, s3_server):
    """With eks_oidc_provider_arn set and the EC2 trust dropped, the role trusts exactly what IRSA needs.

    Planned in a second copy of the module while the apply waits on the lifecycle rule: without
    state there is nothing to refresh, so no API is called and no OIDC provider has to exist in moto.
    """
    plan = Terraform(tmp_path, "eks")
    plan.share_providers(terraform)
    terraform.wait_until_apply_idles()
    planned = _planned(plan, "jsonencode({trust = aws_iam_role.worker.assume_role_policy, "
                             "instance_profiles = length(aws_iam_instance_profile.worker)})", {
        "bucket_name": f"tidemark-tf-{uuid.uuid4().hex[:10]}", "local_endpoint": "true",
        "s3_endpoint": s3_server, "iam_endpoint": s3_server, "sts_endpoint": s3_server,
        "eks_oidc_provider_arn": OIDC_PROVIDER_ARN, "worker_trusted_services": "[]",
    })

    assert planned["instance_profiles"] == 0  # an instance profile is of no use without the EC2 trust
    trust = json.loads(planned["trust"])
    accounts = _helm_worker_service_accounts()
    assert accounts, f"no worker service account in {HELM_VALUES} carries eks.amazonaws.com/role-arn"
    [statement] = _as_list(trust["Statement"])
    assert set(statement) == {"Sid", "Effect", "Action", "Principal", "Condition"}, statement
    assert (statement["Effect"], statement["Action"], statement["Principal"]) == (
        "Allow", "sts:AssumeRoleWithWebIdentity", {"Federated": OIDC_PROVIDER_ARN})
    assert {op: {k: sorted(_as_list(v)) for k, v in keys.items()} for op, keys in statement["Condition"].items()} == {
        "StringEquals": {
            f"{OIDC_ISSUER}:sub": sorted(f"system:serviceaccount:{account}" for account in accounts),
            f"{OIDC_ISSUER}:aud": ["sts.amazonaws.com"],
        }}


def test_bucket_is_versioned_encrypted_private_and_expires_only_reports(stack, s3_server):
    s3, bucket = _client("s3", s3_server), stack["bucket_name"]
    assert stack["registry_uri"] == f"s3://{bucket}/{PREFIX}"

    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    sse = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert [rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] for rule in sse] == ["AES256"]
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    everything = ["BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"]
    assert block == dict.fromkeys(everything, True)
    ownership = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
    assert [rule["ObjectOwnership"] for rule in ownership] == ["BucketOwnerEnforced"]

    # One rule, and it reaches only the drift reports: no model version, alias or record can expire.
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert [(r["Filter"].get("Prefix"), r["Status"], r["Expiration"].get("Days")) for r in rules] == [
        (f"{PREFIX}/monitoring/", "Enabled", RETENTION_DAYS)]
    assert rules[0]["NoncurrentVersionExpiration"]["NoncurrentDays"] >= 1

    # moto ignores the condition, so the refused write shows that the deny reaches the objects;
    # that it is limited to plain HTTP rests on the document.
    [deny] = _as_list(stack["bucket_policy"]["Statement"])
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", "s3:*")
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert sorted(_as_list(deny["Resource"])) == [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]
    assert stack["plain_http_write"] in ("AccessDenied", "403")


def test_worker_policy_grants_exactly_what_the_registry_calls(stack, s3_server):
    calls = set(re.findall(r'_call\(\s*"(\w+)"', (ROOT / "ml" / "registry" / "stores.py").read_text()))
    assert calls, "found no S3 calls in ml/registry/stores.py; update the pattern above"
    unmapped = sorted(calls - S3_ACTIONS.keys())
    assert not unmapped, f"ml/registry/stores.py now calls {unmapped}: grant them in infra/terraform/iam.tf and map them here"

    iam, bucket_arn = _client("iam", s3_server), f"arn:aws:s3:::{stack['bucket_name']}"
    version = iam.get_policy(PolicyArn=stack["policy_arn"])["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=stack["policy_arn"], VersionId=version)["PolicyVersion"]["Document"]
    statements = _as_list((json.loads(document) if isinstance(document, str) else document)["Statement"])

    granted = {action for s in statements for action in _as_list(s["Action"])}
    assert granted == {S3_ACTIONS[call] for call in calls}
    assert not any("*" in action for action in granted)
    for s in statements:
        assert s["Effect"] == "Allow" and set(s) <= {"Sid", "Effect", "Action", "Resource", "Condition"}, s
        if _as_list(s["Action"]) == ["s3:ListBucket"]:
            assert _as_list(s["Resource"]) == [bucket_arn]
            assert {op: {k: _as_list(v) for k, v in keys.items()} for op, keys in s["Condition"].items()} == {
                "StringLike": {"s3:prefix": [f"{PREFIX}/*"]}}
        else:
            assert _as_list(s["Resource"]) == [f"{bucket_arn}/{PREFIX}/*"] and "Condition" not in s

    role = stack["role_name"]
    attached = iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [stack["policy_arn"]]
    assert iam.list_role_policies(RoleName=role)["PolicyNames"] == []
    trust = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert [(s["Action"], s["Principal"]) for s in _as_list(trust["Statement"])] == [
        ("sts:AssumeRole", {"Service": "ec2.amazonaws.com"})]
    profile = iam.get_instance_profile(InstanceProfileName=stack["instance_profile_name"])["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [role]


def test_worker_role_reaches_the_registry_prefix_and_nothing_else(stack, worker_credentials, s3_server):
    from moto.core import enable_iam_authentication

    admin, bucket = _client("s3", s3_server), stack["bucket_name"]
    other = f"tidemark-other-{uuid.uuid4().hex[:10]}"
    admin.create_bucket(Bucket=other)
    admin.put_object(Bucket=other, Key=f"{PREFIX}/x.json", Body=b"{}")
    admin.put_object(Bucket=bucket, Key="elsewhere/x.json", Body=b"{}")
    worker = {k.lower(): v for k, v in worker_credentials.items()}
    s3, iam = _client("s3", s3_server, **worker), _client("iam", s3_server, **worker)
    key = f"{PREFIX}/probe/report.html"

    with enable_iam_authentication():
        s3.put_object(Bucket=bucket, Key=key, Body=b"<html/>", IfNoneMatch="*")
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"<html/>"
        assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/probe/")["Contents"]] == [key]
        # moto ignores the s3:prefix condition, so listing outside the prefix is checked in the document only.
        denied = {
            "put outside the prefix": lambda: s3.put_object(Bucket=bucket, Key="elsewhere/y.json", Body=b"{}"),
            "get outside the prefix": lambda: s3.get_object(Bucket=bucket, Key="elsewhere/x.json"),
            "delete inside the prefix": lambda: s3.delete_object(Bucket=bucket, Key=key),
            "get from another bucket": lambda: s3.get_object(Bucket=other, Key=f"{PREFIX}/x.json"),
            "change the bucket policy": lambda: s3.delete_bucket_policy(Bucket=bucket),
            "read IAM": lambda: iam.list_roles(),
        }
        assert {what: _error_code(call) for what, call in denied.items()} == dict.fromkeys(denied, "AccessDenied")


@dataclass(frozen=True)
class WorkerBackend(Backend):
    """A fresh registry in the Terraform bucket, used with the worker role while moto enforces IAM.

    The raw writes that damage artifacts on purpose go around IAM, as an operator's would.
    """

    def raw_put(self, key: str, data: bytes) -> None:
        from moto.core import disable_iam_authentication

        with disable_iam_authentication():
            super().raw_put(key, data)

    def raw_delete(self, key: str) -> None:
        from moto.core import disable_iam_authentication

        with disable_iam_authentication():
            super().raw_delete(key)


@pytest.fixture
def backend(stack, worker_credentials, s3_env, monkeypatch) -> Iterator[WorkerBackend]:
    """Overrides the contract's `backend`: each test gets an empty registry under the Terraform prefix.

    The root ends in /models because the contract checks the registry URI's last segment; the
    credentials go into the environment so the contract's worker processes inherit them.
    """
    from moto.core import enable_iam_authentication

    for name, value in worker_credentials.items():
        monkeypatch.setenv(name, value)
    with enable_iam_authentication():
        yield WorkerBackend(f"{stack['registry_uri']}/{uuid.uuid4().hex[:12]}/models", s3_env)


# Every contract test that takes `backend` runs here once more, collected from this namespace so
# that the override above applies; tests added to the contract later are picked up too.
CONTRACT = {name: test for name, test in vars(contract).items()
            if name.startswith("test_") and "backend" in inspect.signature(test).parameters}
assert CONTRACT, "no registry contract tests found in tests/integration/test_registry.py"
globals().update(CONTRACT)
