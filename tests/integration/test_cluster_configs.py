"""cluster/: the Ray cluster-launcher config, the KubeRay manifests, the image and local.sh.

The YAML files are checked for the structure the launcher and the operator need (the
launcher config also against the JSON schema that ships with Ray) and for agreeing with
one another; local.sh for its argument handling. The test marked slow starts a real
two-node cluster on loopback with local.sh, runs a task pinned to the worker, and checks
that `down` leaves nothing of it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
LOCAL_SH = CLUSTER / "local.sh"
LAUNCHER = CLUSTER / "ray-cluster.yaml"
KUBERAY = CLUSTER / "kuberay.yaml"
DOCKERFILE = CLUSTER / "Dockerfile"
IMAGE_HOME = "/home/ray/fanout/"  # where cluster/Dockerfile puts the repository's files


def ray_schema() -> dict[str, Any]:
    """The cluster-config schema of the installed Ray (found without importing ray)."""
    spec = importlib.util.find_spec("ray")
    assert spec is not None and spec.origin is not None, "ray is a dependency of fanout"
    path = Path(spec.origin).parent / "autoscaler" / "ray-schema.json"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


@pytest.fixture(scope="module")
def launcher() -> dict[str, Any]:
    config = yaml.safe_load(LAUNCHER.read_text(encoding="utf-8"))
    assert isinstance(config, dict)
    return config


@pytest.fixture(scope="module")
def kuberay() -> dict[str, dict[str, Any]]:
    """The documents of kuberay.yaml by kind (one of each)."""
    docs = [d for d in yaml.safe_load_all(KUBERAY.read_text(encoding="utf-8")) if d]
    kinds = [d.get("kind") for d in docs]
    assert sorted(kinds) == ["RayCluster", "RayJob"], kinds
    return {d["kind"]: d for d in docs}


def image_ray_version() -> str:
    """The Ray version of the base image in cluster/Dockerfile (FROM rayproject/ray:X-pyNN)."""
    match = re.search(r"^FROM rayproject/ray:(\d+\.\d+\.\d+)-py311\b", DOCKERFILE.read_text(), re.M)
    assert match, "cluster/Dockerfile builds on rayproject/ray:<version>-py311"
    return match.group(1)


def commands(config: dict[str, Any], key: str) -> str:
    value = config.get(key)
    assert isinstance(value, list) and value, f"{key} is a non-empty list of commands"
    assert all(isinstance(c, str) for c in value), key
    return "\n".join(value)


# ---------------------------------------------------------------- ray-cluster.yaml


def test_launcher_config_is_valid_for_rays_own_schema(launcher: dict[str, Any]) -> None:
    jsonschema.validate(launcher, ray_schema())  # what `ray up` checks first


def test_launcher_config_has_a_head_and_a_bounded_worker_type(launcher: dict[str, Any]) -> None:
    assert launcher["cluster_name"] == "fanout"
    assert launcher["provider"]["type"] == "aws"
    assert launcher["provider"]["region"]
    types = launcher["available_node_types"]
    head = launcher["head_node_type"]
    assert head in types
    workers = {name: t for name, t in types.items() if name != head}
    assert workers, "at least one worker node type"
    for name, node_type in workers.items():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"], name
        assert node_type["max_workers"] <= launcher["max_workers"], name
        assert node_type["node_config"]["InstanceType"], name
    # The head takes no tasks: it keeps the GCS, the autoscaler and fanout's driver.
    assert types[head]["resources"]["CPU"] == 0
    assert "--num-cpus=0" in commands(launcher, "head_start_ray_commands")


def test_launcher_nodes_run_the_image_and_install_fanout(launcher: dict[str, Any]) -> None:
    assert launcher["docker"]["image"] == f"rayproject/ray:{image_ray_version()}-py311"
    setup = commands(launcher, "setup_commands")
    assert re.search(r"pip install .*/home/ray/fanout", setup)
    assert "fanout --version" in setup
    # The repository is what setup_commands installs: file_mounts puts it there.
    assert launcher["file_mounts"]["/home/ray/fanout"] == "."
    assert any(".venv" in pattern for pattern in launcher["rsync_exclude"])


def test_launcher_start_commands_start_ray_on_head_and_workers(launcher: dict[str, Any]) -> None:
    head = commands(launcher, "head_start_ray_commands")
    worker = commands(launcher, "worker_start_ray_commands")
    assert re.search(r"ray start --head\b.*--port=6379", head)
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert re.search(r"ray start --address=\$RAY_HEAD_IP:6379", worker)


def test_launcher_documents_how_to_submit_a_fanout_job() -> None:
    text = LAUNCHER.read_text(encoding="utf-8")
    assert "ray up cluster/ray-cluster.yaml" in text
    assert re.search(r"ray job submit --address http://\S+ --working-dir \.", text)
    assert re.search(r"fanout run \S+:dag", text)
    assert "--ray auto" in text


# ---------------------------------------------------------------- kuberay.yaml


def containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    found = template["spec"]["containers"]
    assert isinstance(found, list) and found
    return found


def check_container(container: dict[str, Any]) -> None:
    assert container["name"]
    assert container["image"]
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][part]), (container["name"], part)
    # Ray sizes a node from its limits and ignores memory requests: keep them equal.
    assert container["resources"]["requests"] == container["resources"]["limits"]


def check_start_params(params: dict[str, Any]) -> None:
    # KubeRay passes them to `ray start` and takes strings only.
    assert isinstance(params, dict)
    assert all(isinstance(v, str) for v in params.values()), params


def test_kuberay_documents_are_ray_io_v1(kuberay: dict[str, dict[str, Any]]) -> None:
    for kind, doc in kuberay.items():
        assert doc["apiVersion"] == "ray.io/v1", kind
        assert doc["metadata"]["name"], kind


def test_raycluster_has_head_and_worker_groups(kuberay: dict[str, dict[str, Any]]) -> None:
    spec = kuberay["RayCluster"]["spec"]
    head = spec["headGroupSpec"]
    check_start_params(head["rayStartParams"])
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    for container in containers(head["template"]):
        check_container(container)
    assert {p["containerPort"] for p in containers(head["template"])[0]["ports"]} >= {6379, 8265}

    groups = spec["workerGroupSpecs"]
    assert isinstance(groups, list) and groups
    for group in groups:
        assert group["groupName"]
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        check_start_params(group["rayStartParams"])
        for container in containers(group["template"]):
            check_container(container)


def test_raycluster_runs_one_fanout_image_of_its_ray_version(
    kuberay: dict[str, dict[str, Any]],
) -> None:
    spec = kuberay["RayCluster"]["spec"]
    assert spec["rayVersion"] == image_ray_version()
    templates = [spec["headGroupSpec"]["template"]]
    templates += [g["template"] for g in spec["workerGroupSpecs"]]
    images = {c["image"] for t in templates for c in containers(t)}
    assert len(images) == 1, images
    assert "fanout" in images.pop()  # built from cluster/Dockerfile, not a bare Ray image


def test_raycluster_custom_resources_use_kubrays_string_format(
    kuberay: dict[str, dict[str, Any]],
) -> None:
    # KubeRay wants '"{\"name\": 1}"': a quoted JSON object with escaped quotes.
    for group in kuberay["RayCluster"]["spec"]["workerGroupSpecs"]:
        raw = group["rayStartParams"].get("resources")
        if raw is None:
            continue
        assert raw.startswith('"') and raw.endswith('"'), raw
        resources = json.loads(raw[1:-1].replace('\\"', '"'))
        assert resources and all(isinstance(v, int | float) for v in resources.values())
        assert not {"CPU", "GPU", "memory"} & set(resources)  # those have their own params


def test_rayjob_runs_fanout_on_the_raycluster(kuberay: dict[str, dict[str, Any]]) -> None:
    spec = kuberay["RayJob"]["spec"]
    cluster_name = kuberay["RayCluster"]["metadata"]["name"]
    assert spec["clusterSelector"] == {"ray.io/cluster": cluster_name}
    entrypoint = spec["entrypoint"].split()
    assert entrypoint[:2] == ["fanout", "run"]
    assert entrypoint[entrypoint.index("--ray") + 1] == "auto"
    assert "--input" in entrypoint and "--output" in entrypoint
    # The pipeline and the records it names are the repository's, as the image holds them.
    pipeline = entrypoint[2].rsplit(":", 1)[0]
    records = entrypoint[entrypoint.index("--input") + 1]
    for path in (pipeline, records):
        assert path.startswith(IMAGE_HOME), path
        assert (ROOT / path.removeprefix(IMAGE_HOME)).is_file(), path


def test_dockerfile_installs_fanout_and_copies_the_examples() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^WORKDIR /home/ray/fanout$", text, re.M)
    assert re.search(r"^COPY .*\bfanout \./fanout$", text, re.M)
    assert re.search(r"^COPY .*\bexamples \./examples$", text, re.M)
    assert re.search(r"^RUN pip install .*\s\.(\s|$)", text, re.M)


# ---------------------------------------------------------------- local.sh


def local_env(state_dir: Path) -> dict[str, str]:
    """The caller's environment for local.sh: its own state dir, this interpreter's Ray,
    and nothing of another cluster's address or token."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"RAY", "RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"}
    }
    env["FANOUT_CLUSTER_DIR"] = str(state_dir)
    env["PYTHON"] = sys.executable
    return env


def local_sh(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LOCAL_SH), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_local_sh_is_executable_and_parses() -> None:
    assert os.access(LOCAL_SH, os.X_OK)
    assert LOCAL_SH.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in LOCAL_SH.read_text()
    parsed = subprocess.run(["bash", "-n", str(LOCAL_SH)], capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stderr


def test_local_sh_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    checked = subprocess.run([shellcheck, str(LOCAL_SH)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "missing command"),
        (("frobnicate",), "unknown command 'frobnicate'"),
        (("up", "--workers"), "--workers needs a value"),
        (("up", "--workers", "two"), "--workers needs a whole number, got 'two'"),
        (("up", "--cpus-per-node=0"), "--cpus-per-node must be 1..1024, got 0"),
        (("up", "--port", "80"), "--port must be 1024..65535, got 80"),
        (("up", "--port", "12345"), "outside 10002..19999"),
        (("up", "--verbose"), "unknown argument '--verbose'"),
        (("status", "--port", "6380"), "--port is an option of 'up', not of 'status'"),
        (("down", "--workers", "1"), "--workers is an option of 'up', not of 'down'"),
    ],
)
def test_local_sh_rejects_bad_arguments_with_usage(
    args: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    result = local_sh(*args, env=local_env(tmp_path / "state"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "usage: local.sh up [--workers N]" in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "state").exists()  # nothing was started or written


def test_local_sh_help_prints_usage(tmp_path: Path) -> None:
    result = local_sh("--help", env=local_env(tmp_path / "state"))
    assert result.returncode == 0
    assert result.stdout.startswith("usage: local.sh up")
    for word in ("--workers N", "--cpus-per-node C", "--port P", "FANOUT_CLUSTER_DIR"):
        assert word in result.stdout


def test_local_sh_status_and_down_without_a_cluster(tmp_path: Path) -> None:
    env = local_env(tmp_path / "state")
    status = local_sh("status", env=env)
    assert status.returncode == 1
    assert "not up" in status.stdout
    down = local_sh("down", env=env)
    assert down.returncode == 0, down.stderr
    assert "nothing to stop" in down.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


def read_state(state_dir: Path) -> dict[str, str]:
    lines = (state_dir / "cluster.state").read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def processes() -> list[tuple[int, int, str]]:
    """(pid, session id, command line) of every process on the machine."""
    out = subprocess.run(
        ["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True, check=True
    ).stdout
    rows = []
    for line in out.splitlines():
        pid, sid, *args = line.split(None, 2)
        rows.append((int(pid), int(sid), args[0] if args else ""))
    return rows


PINNED_TASK = """
import ray

ray.init(log_to_driver=False)  # RAY_ADDRESS and the token come from the environment
names = {}
for node in ray.nodes():
    if node["Alive"]:
        for key in node["Resources"]:
            if key.startswith("fanout_node_"):
                names[node["NodeID"]] = key

@ray.remote(num_cpus=0)
def where():
    return ray.get_runtime_context().get_node_id()

for name in sorted(names.values()):
    node_id = ray.get(where.options(resources={name: 1}).remote())
    print(name, "->", names[node_id])
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_local_cluster_up_status_pinned_task_down(tmp_path: Path) -> None:
    state_dir = tmp_path / "cluster"
    env = local_env(state_dir)
    port = free_port()
    state: dict[str, str] = {}
    try:
        up = local_sh("up", "--workers", "1", "--port", str(port), env=env, timeout=400)
        assert up.returncode == 0, up.stderr
        driver_env = dict(line.split("=", 1) for line in up.stdout.splitlines())
        assert driver_env["RAY_ADDRESS"] == f"127.0.0.1:{port}"
        assert driver_env["RAY_AUTH_MODE"] == "token"
        assert Path(driver_env["RAY_AUTH_TOKEN_PATH"]).is_file()
        state = read_state(state_dir)
        assert len(state["SIDS"].split()) == 2  # one session per node

        status = local_sh("status", env=env, timeout=120)
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"address: 127.0.0.1:{port}" in status.stdout
        assert re.search(r"^nodes:\s+2/2 alive$", status.stdout, re.M), status.stdout
        assert re.search(r"^\s+fanout_node_0\s+yes\s.*\bhead$", status.stdout, re.M)
        assert re.search(r"^\s+fanout_node_1\s+yes\s.*\bworker$", status.stdout, re.M)

        again = local_sh("up", "--workers", "1", env=env, timeout=120)
        assert again.returncode == 0, again.stderr
        assert "already up" in again.stderr
        assert again.stdout == up.stdout
        clash = local_sh("up", "--workers", "3", env=env, timeout=120)
        assert clash.returncode == 1
        assert "already up" in clash.stderr and "--workers 1" in clash.stderr

        pinned = subprocess.run(
            [sys.executable, "-c", PINNED_TASK],
            env={**env, **driver_env},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert pinned.returncode == 0, pinned.stderr
        assert pinned.stdout.splitlines() == [
            "fanout_node_0 -> fanout_node_0",
            "fanout_node_1 -> fanout_node_1",
        ]
    finally:
        down = local_sh("down", env=env, timeout=300)
    assert down.returncode == 0, down.stderr

    status = local_sh("status", env=env)
    assert status.returncode == 1
    assert "not up" in status.stdout
    sids = {int(s) for s in state["SIDS"].split()}
    temp_dir = state["TEMP_DIR"]
    left = [p for p in processes() if p[1] in sids or temp_dir in p[2]]
    assert left == []
    assert not Path(temp_dir).exists()
    assert not (state_dir / "cluster.state").exists()
    assert not Path(driver_env["RAY_AUTH_TOKEN_PATH"]).exists()
