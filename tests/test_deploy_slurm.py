"""Cluster deployment: the Slurm batch script run for real on a two-"node" fake Slurm on this
machine (tests/fake_slurm), and the KubeRay RayJob checked against its schema and launch.py's
own flag parser."""

from __future__ import annotations

import copy
import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port

SBATCH = REPO / "deploy" / "slurm" / "search.sbatch"
FAKE_SLURM = REPO / "tests" / "fake_slurm"
RAYJOB = REPO / "deploy" / "kuberay" / "rayjob.yaml"
SCHEMA = REPO / "deploy" / "kuberay" / "rayjob.schema.json"


# --- Slurm ------------------------------------------------------------------------------------

def distinct_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def slurm_env(tmp_path: Path, marker: str, **extra: str) -> dict[str, str]:
    """A job of two nodes (fake1 = head, fake2 = worker) with 1 CPU each, all on 127.0.0.1;
    every process the script starts inherits ``SCITUNE_TEST_MARKER=<marker>``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_AUTH", "SLURM_", "RAY_ADDRESS"))}
    gcs, dashboard, client, head_agent, worker_agent = distinct_ports(5)
    env.update(
        SRUN=str(FAKE_SLURM / "srun"), SCONTROL=str(FAKE_SLURM / "scontrol"),
        SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="fake[1-2]", SLURM_CPUS_ON_NODE="1",
        SLURM_SUBMIT_DIR=str(REPO), CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable,
        SCITUNE_STORAGE=str(tmp_path / "shared"),
        RAY_HEAD_IP="127.0.0.1", RAY_PORT=str(gcs), RAY_DASHBOARD_PORT=str(dashboard),
        # two "nodes" on one host: the ports Ray fixes by default must differ between them
        RAY_HEAD_ARGS=f"--ray-client-server-port {client} --dashboard-agent-listen-port {head_agent}",
        RAY_WORKER_ARGS=f"--dashboard-agent-listen-port {worker_agent}",
        FAKE_SLURM_STEPS=str(tmp_path / "steps.txt"),
        SCITUNE_TEST_MARKER=marker, SCITUNE_STOP_GRACE="40", SCITUNE_JOIN_TIMEOUT="120",
    )
    env.update(extra)
    return env


def marked_processes(marker: str) -> dict[int, str]:
    """pid -> command line of every live process carrying the marker in its environment
    (children the script's processes left behind are found even once re-parented)."""
    needle = f"SCITUNE_TEST_MARKER={marker}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
    return found


def assert_nothing_left(marker: str, wait: float = 30) -> None:
    """Fails (after killing them by pid) when processes the script started are still alive."""
    deadline = time.monotonic() + wait
    left = marked_processes(marker)
    while left and time.monotonic() < deadline:
        time.sleep(1)
        left = marked_processes(marker)
    for pid in left:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    assert not left, f"processes left behind: {left}"


def run_sbatch(env: dict[str, str], cwd: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """``bash search.sbatch ARGS`` with its output in files, as Slurm's output file is (a pipe
    would keep the run waiting on any process left holding it)."""
    out, err = cwd / "job.out", cwd / "job.err"
    try:
        with out.open("w") as stdout, err.open("w") as stderr:
            code = subprocess.run(["bash", str(SBATCH), *args], env=env, cwd=cwd, stdout=stdout,
                                  stderr=stderr, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        assert_nothing_left(env["SCITUNE_TEST_MARKER"], wait=0)
        raise
    return subprocess.CompletedProcess(args, code, out.read_text(), err.read_text())


@pytest.mark.slow  # ~60-90 s: a two-node Ray cluster, 4 small trials, a clean stop
def test_sbatch_runs_a_search_on_every_node_and_stops_its_ray(tmp_path):
    from mlflow.tracking import MlflowClient

    marker = uuid.uuid4().hex
    db = tmp_path / "mlflow.db"
    env = slurm_env(tmp_path, marker, SCITUNE_ARGS="--scheduler fifo --max-epochs 2")
    started = time.monotonic()
    result = run_sbatch(env, tmp_path, "--space", "resnet1d", "--trials", "4", "--samples", "400",
                        "--experiment", "slurm", "--mlflow-uri", f"sqlite:///{db}", timeout=300)
    elapsed = time.monotonic() - started
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "2 of 2 Ray nodes joined" in result.stdout, log[-4000:]

    steps = [line.split(" ", 2) for line in (tmp_path / "steps.txt").read_text().splitlines()]
    ray_steps = [s for s in steps if " start --block" in s[2]]
    by_node = {node: command for _, node, command in ray_steps}
    assert sorted(by_node) == ["fake1", "fake2"], steps  # one `ray start` per node
    assert "--head" in by_node["fake1"] and "--address=127.0.0.1:" in by_node["fake2"]
    assert all("--num-cpus=1 --num-gpus=0" in c for c in by_node.values())  # what Slurm granted

    # trials ran on both nodes (the node id of each result), all four finished in MLflow
    nodes = set()
    for result_file in (tmp_path / "shared" / "slurm").glob("trial_*/result.json"):
        for line in result_file.read_text().splitlines():
            nodes.add(json.loads(line)["node_id"])
    assert len(nodes) == 2, nodes
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("slurm")
    runs = [r for r in client.search_runs([experiment.experiment_id])
            if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    assert all(len(client.get_metric_history(r.info.run_id, "val_top1")) == 2 for r in runs)

    # the script stopped what it started: the srun steps' pids, and everything below them
    assert_nothing_left(marker)
    print(f"sbatch search: {elapsed:.0f} s")


@pytest.mark.slow  # ~40 s: the head starts, the worker never joins, 20 s time-out
def test_sbatch_fails_in_time_when_a_node_never_joins(tmp_path):
    marker = uuid.uuid4().hex
    env = slurm_env(tmp_path, marker, FAKE_SLURM_DEAD_NODES="fake2", SCITUNE_JOIN_TIMEOUT="20")
    started = time.monotonic()
    result = run_sbatch(env, tmp_path, "--space", "resnet1d", "--trials", "1", timeout=180)
    elapsed = time.monotonic() - started
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 1, result.stderr[-3000:]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "only 1 of 2 Ray nodes joined within 20 s" in errors[0], errors
    assert "Traceback" not in result.stderr
    assert elapsed < 20 + 60, elapsed  # start-up + time-out + stop, not the 300 s default
    assert not (tmp_path / "shared").exists(), "no search may start on a partial cluster"
    assert_nothing_left(marker)


def test_sbatch_outside_slurm_says_so_and_starts_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(SRUN="/bin/false", SCONTROL="/bin/false")
    result = subprocess.run(["bash", str(SBATCH), "--trials", "1"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "scitune-slurm: error: SLURM_JOB_NODELIST is not set: submit this script with sbatch"]


def test_fake_scontrol_expands_slurm_node_lists():
    out = subprocess.run([str(FAKE_SLURM / "scontrol"), "show", "hostnames", "gpu[08-10,12],login1"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["gpu08", "gpu09", "gpu10", "gpu12", "login1"]


# --- KubeRay ----------------------------------------------------------------------------------

def load_rayjob() -> dict:
    import yaml

    return yaml.safe_load(RAYJOB.read_text())


def rayjob_problems(doc: dict) -> list[str]:
    """Everything wrong with a RayJob manifest: the JSON Schema (KubeRay's v1 fields), the
    entrypoint's launch.py flags (the project's real parser), and how the pieces fit."""
    import jsonschema

    from cli.main import parse
    from common.errors import BadInput

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    problems = [f"schema: {'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in validator.iter_errors(doc)]
    if problems:
        return problems
    spec = doc["spec"]
    words = shlex.split(spec["entrypoint"])
    launch = [i for i, w in enumerate(words) if w.endswith("launch.py")]
    if not launch:
        return ["entrypoint: runs no launch.py"]
    argv = words[launch[0] + 1:]
    try:
        args = parse(argv)
    except BadInput as exc:
        return [f"entrypoint: launch.py refuses its flags: {exc}"]
    from search_spaces import get_space

    try:
        get_space(args.space or "resnet1d")
    except BadInput as exc:
        problems.append(f"entrypoint: {exc}")
    if not args.address:
        problems.append("entrypoint: no --address (the search would start its own Ray)")
    if not args.storage or not args.mlflow_uri:
        problems.append("entrypoint: --storage and --mlflow-uri are required on a cluster")
    if spec.get("shutdownAfterJobFinishes") is not True:
        problems.append("shutdownAfterJobFinishes must be true")
    cluster = spec["rayClusterSpec"]
    pods = [("head", cluster["headGroupSpec"]["template"])]
    pods += [(g["groupName"], g["template"]) for g in cluster.get("workerGroupSpecs", [])]
    for name, template in pods:  # --storage on a volume every pod mounts
        mounts = [m["mountPath"] for c in template["spec"]["containers"]
                  for m in c.get("volumeMounts", [])]
        if args.storage and not any(args.storage.startswith(m.rstrip("/") + "/") for m in mounts):
            problems.append(f"{name}: --storage {args.storage} is on no volume this pod mounts")
    gpus = 0
    for group in cluster.get("workerGroupSpecs", []):
        lo, n, hi = group.get("minReplicas", 0), group.get("replicas", 0), group.get("maxReplicas", 0)
        if not lo <= n <= hi:
            problems.append(f"{group['groupName']}: replicas {n} not within [{lo}, {hi}]")
        for c in group["template"]["spec"]["containers"]:
            gpus = max(gpus, int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)))
    if not gpus:
        problems.append("no worker group has nvidia.com/gpu limits")
    elif args.gpus_per_trial > gpus:
        problems.append(f"--gpus-per-trial {args.gpus_per_trial} > {gpus} GPUs per worker")
    return problems


def test_rayjob_manifest_is_valid_and_its_entrypoint_parses():
    doc = load_rayjob()
    assert rayjob_problems(doc) == []
    assert doc["spec"]["shutdownAfterJobFinishes"] is True
    text = RAYJOB.read_text()
    assert text.count("CHANGE-ME") >= 4  # image (twice), PVC, MLflow server: marked placeholders


def broken(*path, value=None, delete: bool = False) -> dict:
    """A copy of the manifest with the value at ``path`` (keys and list indices) replaced."""
    doc = copy.deepcopy(load_rayjob())
    *parents, last = path
    node = doc
    for key in parents:
        node = node[key]
    if delete:
        del node[last]
    else:
        node[last] = value
    return doc


WORKER = ("spec", "rayClusterSpec", "workerGroupSpecs", 0)
WORKER_CONTAINER = (*WORKER, "template", "spec", "containers", 0)


@pytest.mark.parametrize("doc, expected", [
    (lambda: broken("apiVersion", value="ray.io/v1alpha1"), "schema: apiVersion"),
    (lambda: broken("spec", "shutdownAfterJobFinish", value=True), "Additional properties"),
    (lambda: broken("spec", "shutdownAfterJobFinishes", value="yes"),
     "schema: spec/shutdownAfterJobFinishes"),
    (lambda: broken(*WORKER_CONTAINER, "image", delete=True), "'image' is a required property"),
    (lambda: broken(*WORKER, "rayStartParams", value={"num-gpus": 4}), "rayStartParams/num-gpus"),
    (lambda: broken(*WORKER_CONTAINER, "resources", "limits", "nvidia.com/gpu", value=0.5),
     "limits/nvidia.com/gpu"),
    (lambda: broken("spec", "entrypoint", value="python /app/launch.py --space resnet1d --trails 200 "
                    "--address auto --storage /mnt/shared/r --mlflow-uri http://m:5000"),
     "launch.py refuses its flags"),
    (lambda: broken("spec", "entrypoint", value="python /app/launch.py --space resnet1d "
                    "--address auto --storage /tmp/r --mlflow-uri http://m:5000"), "is on no volume"),
    (lambda: broken(*WORKER, "replicas", value=3), "replicas 3 not within"),
    (lambda: broken("spec", "shutdownAfterJobFinishes", delete=True),
     "'shutdownAfterJobFinishes' is a required property"),
], ids=["api-version", "misspelt-field", "not-a-bool", "no-image", "int-start-param",
        "fractional-gpu", "renamed-flag", "storage-not-shared", "replicas", "no-shutdown"])
def test_a_broken_rayjob_manifest_is_refused(doc, expected):
    problems = rayjob_problems(doc())
    assert problems and any(expected in p for p in problems), problems


def test_a_broken_rayjob_file_is_refused(tmp_path):
    """A real broken copy of the file, read the same way (YAML with a wrong indentation)."""
    import yaml

    text = RAYJOB.read_text().replace("  shutdownAfterJobFinishes: true",
                                      "  rayClusterSpec_typo: {}\n  shutdownAfterJobFinishes: true")
    copy_path = tmp_path / "rayjob.yaml"
    copy_path.write_text(text)
    problems = rayjob_problems(yaml.safe_load(copy_path.read_text()))
    assert any("rayClusterSpec_typo" in p for p in problems), problems
