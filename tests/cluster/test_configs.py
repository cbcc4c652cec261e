"""The shipped cluster configs: Ray's own validation, security rules, no credentials."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).parents[2]
LAUNCHER_CONFIGS = ["cluster/aws-gpu.yaml", "cluster/onprem.yaml"]


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_configs_pass_rays_validation(name):
    config = yaml.safe_load((ROOT / name).read_text())
    validate_config(prepare_config(config))


def test_rays_validation_catches_a_broken_config():
    config = yaml.safe_load((ROOT / "cluster/aws-gpu.yaml").read_text())
    config["available_node_types"]["gpu_worker"]["node_confg"] = config["available_node_types"]["gpu_worker"].pop(
        "node_config")
    with pytest.raises(jsonschema.ValidationError, match="'node_config' is a required property"):
        validate_config(prepare_config(config))


def _start_commands(config: dict) -> str:
    return " ".join(config.get("head_start_ray_commands", []) + config.get("worker_start_ray_commands", []))


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_dashboard_on_loopback_and_token_auth_on(name):
    config = yaml.safe_load((ROOT / name).read_text())
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in command:
            assert "RAY_AUTH_MODE=token" in command
    assert "auth_token" in " ".join(config["file_mounts"])


def test_aws_config_has_cpu_head_gpu_workers_spot_and_bounds():
    config = yaml.safe_load((ROOT / "cluster/aws-gpu.yaml").read_text())
    types = config["available_node_types"]
    assert types["head"]["resources"].get("GPU", 0) == 0
    worker = types["gpu_worker"]
    assert worker["resources"]["GPU"] >= 1 and worker["min_workers"] <= worker["max_workers"]
    assert worker["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert any("mismatch" in p for p in config["file_mounts"])
    assert any("download.pytorch.org/whl/cu" in c for c in config["setup_commands"])  # a CUDA torch


def test_rayjob_runs_the_submit_script_with_auth_and_a_private_service():
    job = yaml.safe_load((ROOT / "cluster/kuberay-rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert "cluster/submit_study.py" in job["spec"]["entrypoint"]
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["headGroupSpec"]["serviceType"] == "ClusterIP"
    gpu = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1"


def test_any_all_interfaces_binding_is_explained_in_a_comment():
    for path in sorted((ROOT / "cluster").glob("*.yaml")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            code = line.split("#", 1)[0]
            if "0.0.0.0" in code:
                context = " ".join(lines[max(0, i - 4): i])
                assert "#" in context and "token" in context, f"{path.name}:{i + 1} binds 0.0.0.0 without a why"


CREDENTIAL = re.compile(
    r"AKIA[0-9A-Z]{16}|aws_secret_access_key\s*[:=]|BEGIN [A-Z ]*PRIVATE KEY|ghp_[A-Za-z0-9]{20,}|password\s*[:=]\s*\S",
    re.IGNORECASE,
)


def test_no_credential_in_any_committed_file():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    leaks = []
    for name in files:
        path = ROOT / name
        if path.suffix in {".py", ".yaml", ".yml", ".md", ".toml", ".json", ".sh", ""} and path.is_file():
            text = path.read_text(errors="ignore")
            leaks += [f"{name}: {m.group(0)[:20]}" for m in CREDENTIAL.finditer(text) if "test_configs.py" not in name]
    assert not leaks, leaks
