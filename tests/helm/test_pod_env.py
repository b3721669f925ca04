"""The kubelet emulation the chart test relies on (tests/helm/kube.py), on hand-written pod specs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helm.kube import (
    DOCKERFILES,
    PYTHON_BASE_ENV,
    Cluster,
    Image,
    Manifests,
    Unsupported,
    expand,
    image_from_dockerfile,
    local_container,
)

IMAGE = Image(env={"PATH": "/opt/app/bin:/usr/bin", "FROM_IMAGE": "image", "SHADOWED": "image"}, workdir="/data")


def _deployment(container: dict[str, Any], **pod: Any) -> dict[str, Any]:
    spec = {"containers": [{"name": "main", **container}], "volumes": [{"name": "data", "emptyDir": {}}], **pod}
    return {"kind": "Deployment", "metadata": {"name": "app"}, "spec": {"template": {"spec": spec}}}


def _manifests() -> Manifests:
    return Manifests(
        [
            {
                "kind": "ConfigMap",
                "metadata": {"name": "settings"},
                "data": {"SHADOWED": "configmap", "DIR": "/data/x"},
            },
            {
                "kind": "Service",
                "metadata": {"name": "app-grpc"},
                "spec": {"ports": [{"name": "grpc", "port": 50051, "protocol": "TCP"}]},
            },
            {"kind": "Service", "metadata": {"name": "app-headless"}, "spec": {"clusterIP": "None", "ports": []}},
        ]
    )


def _resolve(workload: dict[str, Any], tmp_path: Path, secrets: dict[str, dict[str, str]] | None = None) -> Any:
    cluster = Cluster(manifests=_manifests(), secrets=secrets or {}, pod_name="app-abc12")
    return local_container(
        workload,
        "main",
        image=IMAGE,
        cluster=cluster,
        work_dir=tmp_path,
        executables={"app": Path("/local/app")},
        image_paths={"/opt/app/bin": Path("/local/venv/bin")},
    )


def test_precedence_expansion_fields_secrets_and_mounts(tmp_path: Path) -> None:
    workload = _deployment(
        {
            "command": ["app"],
            "args": ["serve", "--name=$(POD)", "$$(POD)"],
            "envFrom": [{"configMapRef": {"name": "settings"}}],
            "env": [
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "GREETING", "value": "hi $(POD) from $(FROM_IMAGE)"},  # image ENV is not expandable
                {"name": "URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
                {"name": "MAYBE", "valueFrom": {"secretKeyRef": {"name": "db", "key": "nope", "optional": True}}},
            ],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        }
    )
    resolved = _resolve(workload, tmp_path, {"db": {"url": "postgresql+asyncpg://db/x"}})
    data = tmp_path / "volumes" / "data"
    assert resolved.argv == ["/local/app", "serve", "--name=app-abc12", "$(POD)"]
    env = resolved.env
    assert (env["FROM_IMAGE"], env["SHADOWED"], env["POD"], env["HOSTNAME"]) == (
        "image",
        "configmap",
        "app-abc12",
        "app-abc12",
    )
    assert env["GREETING"] == "hi app-abc12 from $(FROM_IMAGE)"
    assert env["URL"] == "postgresql+asyncpg://db/x" and "MAYBE" not in env
    assert env["DIR"] == f"{data}/x" and resolved.cwd == data
    assert env["PATH"] == "/local/venv/bin:/usr/bin"
    assert env["APP_GRPC_SERVICE_HOST"] and env["APP_GRPC_PORT_50051_TCP_PORT"] == "50051"
    assert env["KUBERNETES_SERVICE_HOST"] and not any(k.startswith("APP_HEADLESS") for k in env)


def test_service_links_off_and_image_entrypoint(tmp_path: Path) -> None:
    image = Image(env={}, entrypoint=("app",), cmd=("default",))
    workload = _deployment({"args": ["other"]}, enableServiceLinks=False)
    cluster = Cluster(manifests=_manifests(), secrets={}, pod_name="p")
    resolved = local_container(
        workload, "main", image=image, cluster=cluster, work_dir=tmp_path, executables={"app": Path("/local/app")}
    )
    assert resolved.argv == ["/local/app", "other"]
    assert not any(k.startswith("APP_GRPC") for k in resolved.env) and "KUBERNETES_SERVICE_HOST" in resolved.env
    assert resolved.cwd == tmp_path / "rootfs"  # "/" is the image's filesystem, not a volume


def test_what_a_cluster_would_refuse_or_the_emulation_cannot_do(tmp_path: Path) -> None:
    missing = _deployment(
        {"command": ["app"], "env": [{"name": "U", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}
    )
    with pytest.raises(AssertionError, match="CreateContainerConfigError"):
        _resolve(missing, tmp_path)
    resource = _deployment(
        {"command": ["app"], "env": [{"name": "M", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}}]}
    )
    with pytest.raises(Unsupported):
        _resolve(resource, tmp_path)
    with pytest.raises(Unsupported, match="cannot run locally"):
        _resolve(_deployment({"command": ["sh", "-c", "app"]}), tmp_path)


def test_expand_follows_kubernetes() -> None:
    env = {"A": "1"}
    assert expand("$(A)-$(B)-$$(A)-$$-$", env) == "1-$(B)-$(A)-$-$"


def test_the_control_plane_image_as_its_dockerfile_builds_it() -> None:
    image = image_from_dockerfile(DOCKERFILES / "controlplane.Dockerfile", PYTHON_BASE_ENV)
    assert (
        image.env["PATH"].startswith("/opt/meshplane/bin:") and image.env["MESHPLANE_DATA_DIR"] == "/var/lib/meshplane"
    )
    assert (image.workdir, image.entrypoint, image.cmd) == ("/var/lib/meshplane", ("meshplane",), ("up",))
