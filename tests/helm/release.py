"""The chart's workloads as local processes: images, executables, and the pods of one test."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any
from unittest import mock

from controlplane.devtools.ports import free_port
from controlplane.settings import Settings
from tests.helm.kube import (
    DISTROLESS_BASE_ENV,
    DOCKERFILES,
    PYTHON_BASE_ENV,
    ROOT,
    Cluster,
    LocalContainer,
    Manifests,
    image_from_dockerfile,
    local_container,
)
from tests.helm.pod import LocalPod

VENV_BIN = ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin" / "meshplane").exists() else Path(sys.executable).parent
CONTROLPLANE_IMAGE = image_from_dockerfile(DOCKERFILES / "controlplane.Dockerfile", PYTHON_BASE_ENV)
GATEWAY_IMAGE = image_from_dockerfile(DOCKERFILES / "gateway.Dockerfile", DISTROLESS_BASE_ENV)
# The control-plane image's virtualenv (/opt/meshplane) is this checkout's .venv.
IMAGE_PATHS = {"/opt/meshplane/bin": VENV_BIN}

READY_PREFIX = "meshplane ready: grpc "
GATEWAY_READY_PREFIX = "meshplane gateway listening on "

# MESHPLANE_* variables read outside Settings, by the `meshplane` CLI itself.
CLI_VARIABLES = {
    "MESHPLANE_GATEWAY": "controlplane/cli/mesh.py: `off` keeps `meshplane up` from starting its embedded gateway",
    "MESHPLANE_HTTP_LISTEN": "controlplane/cli/mesh.py: the embedded gateway's listen address",
}


def free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def chart_variables(container: LocalContainer, cluster: Cluster) -> dict[str, str]:
    """The variables the chart itself sets on a container (ConfigMaps in envFrom, and env)."""
    names: set[str] = set()
    config_maps = cluster.manifests.config_map_data()
    for entry in container.spec.get("envFrom", []):
        if "configMapRef" in entry:
            names.update(entry.get("prefix", "") + key for key in config_maps[entry["configMapRef"]["name"]])
        elif "secretRef" in entry:
            names.update(entry.get("prefix", "") + key for key in cluster.secrets[entry["secretRef"]["name"]])
    names.update(entry["name"] for entry in container.spec.get("env", []))
    return {name: container.env[name] for name in sorted(names) if name in container.env}


def settings_seen_by_the_plane(container: LocalContainer, cluster: Cluster) -> Settings:
    """Settings as `meshplane` builds them from exactly this environment; and no MESHPLANE_* variable the
    chart sets may be one the code does not read (pydantic would ignore it silently)."""
    fields = {f"MESHPLANE_{name.upper()}" for name in Settings.model_fields}
    ignored = [
        name
        for name in chart_variables(container, cluster)
        if name.startswith("MESHPLANE_") and name not in fields and name not in CLI_VARIABLES
    ]
    assert not ignored, f"the chart sets {ignored} on {container.spec['name']}, which the control plane never reads"
    with mock.patch.dict(os.environ, container.env, clear=True):
        return Settings()


def gateway_flags(binary: Path) -> set[str]:
    """The MESHPLANE_GATEWAY_* variables the gateway reads: one per flag of its --help."""
    result = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=30, check=False)
    flags = re.findall(r"^\s+-{1,2}([a-z][a-z0-9-]*)", result.stdout + result.stderr, flags=re.MULTILINE)
    assert flags, f"no flags in meshplane-gateway --help:\n{result.stdout}{result.stderr}"
    return {"MESHPLANE_GATEWAY_" + flag.upper().replace("-", "_") for flag in flags}


class Pods:
    """The pods of one test; whatever still runs when the block ends is SIGKILLed."""

    def __init__(self, work_dir: Path, *, gateway_binary: Path | None = None) -> None:
        self.work_dir = work_dir
        self.executables: dict[str, Path] = {"meshplane": VENV_BIN / "meshplane"}
        if gateway_binary is not None:
            self.executables["meshplane-gateway"] = gateway_binary
        self.pods: list[LocalPod] = []

    async def __aenter__(self) -> Pods:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for pod in reversed(self.pods):
            with contextlib.suppress(Exception):
                await pod.kill()

    def container(
        self,
        manifests: Manifests,
        secrets: Mapping[str, Mapping[str, str]],
        workload: tuple[str, str],
        container_name: str,
        pod_name: str,
    ) -> tuple[LocalContainer, Cluster]:
        """Resolve `container_name` of the rendered (kind, name) workload for a pod called `pod_name`."""
        kind, name = workload
        image = GATEWAY_IMAGE if container_name == "gateway" else CONTROLPLANE_IMAGE
        cluster = Cluster(manifests=manifests, secrets=secrets, pod_name=pod_name)
        resolved = local_container(
            manifests.one(kind, name),
            container_name,
            image=image,
            cluster=cluster,
            work_dir=self.work_dir / pod_name,
            executables=self.executables,
            image_paths=IMAGE_PATHS,
        )
        return resolved, cluster

    def pod(self, pod_name: str, container: LocalContainer) -> LocalPod:
        pod = LocalPod(pod_name, container, self.work_dir / "logs")
        self.pods.append(pod)
        return pod


def startup_budget(spec: Mapping[str, Any]) -> float:
    """Seconds the kubelet gives a container to pass its startup probe (else the liveness probe)."""
    probe = spec.get("startupProbe") or spec.get("livenessProbe") or {}
    return float(probe.get("initialDelaySeconds", 0)) + float(probe.get("periodSeconds", 10)) * float(
        probe.get("failureThreshold", 3)
    )


def shutdown_budget(pod_spec: Mapping[str, Any], spec: Mapping[str, Any]) -> float:
    """Seconds between SIGTERM and SIGKILL: the grace period minus a preStop sleep."""
    grace = float(pod_spec.get("terminationGracePeriodSeconds", 30))
    sleep = spec.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    return grace - float(sleep)
