"""Render the chart with the pinned helm, and turn one rendered container into the local process the
kubelet would start for it: argv, environment and working directory, resolved as Kubernetes does.

Nothing here knows Meshplane's settings: whatever the chart puts in a container is what the process
gets. What a cluster would supply is passed in explicitly (`Cluster`): Secret contents, the pod name,
and local directories standing for the volumes. A reference the resolver does not understand is an
error, never silently dropped, so a chart change that the emulation cannot follow fails the test.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "meshplane"
DOCKERFILES = ROOT / "deploy" / "docker"
RELEASE = "meshplane"
NAMESPACE = "meshplane"

Obj = dict[str, Any]

# The helm binary doubles as the YAML parser (no YAML library is a project dependency): a throwaway
# chart receives the rendered manifests as a string value and prints them back as one JSON document.
_TO_JSON_CHART = {
    "Chart.yaml": "apiVersion: v2\nname: tojson\nversion: 0.0.0\n",
    "templates/all.yaml": (
        "{{- $docs := list -}}\n"
        '{{- range regexSplit "(?m)^---[ \\t]*$" .Values.manifests -1 -}}\n'
        "{{- $doc := fromYaml . -}}\n"
        '{{- if hasKey $doc "Error" -}}{{- fail (printf "not YAML: %s" $doc.Error) -}}{{- end -}}\n'
        "{{- if $doc -}}{{- $docs = append $docs $doc -}}{{- end -}}\n"
        "{{- end -}}\n"
        '{{- dict "kind" "List" "items" $docs | toJson -}}\n'
    ),
}


class Manifests:
    """The objects one `helm template` rendered."""

    def __init__(self, objects: list[Obj]) -> None:
        self.objects = objects

    def all(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o.get("kind") == kind]

    def find(self, kind: str, name: str) -> Obj | None:
        return next((o for o in self.all(kind) if o["metadata"]["name"] == name), None)

    def one(self, kind: str, name: str) -> Obj:
        found = self.find(kind, name)
        if found is None:
            rendered = sorted(f"{o.get('kind')}/{o['metadata']['name']}" for o in self.objects)
            raise AssertionError(f"the chart rendered no {kind} {name!r}; it rendered {rendered}")
        return found

    def config_map_data(self) -> dict[str, dict[str, str]]:
        return {o["metadata"]["name"]: dict(o.get("data") or {}) for o in self.all("ConfigMap")}


def _helm(helm: Path, *args: str) -> str:
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    if result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args[:3])} ... failed:\n{result.stderr}")
    return result.stdout


def render(helm: Path, *, values_files: Sequence[Path] = (), values: Mapping[str, object] | None = None) -> Manifests:
    """`helm template` the chart as release `meshplane` in namespace `meshplane`."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for path in values_files:
        args += ["--values", str(path)]
    for key, value in (values or {}).items():
        if isinstance(value, str):
            args += ["--set-string", f"{key}={value}"]
        else:
            args += ["--set", f"{key}={json.dumps(value)}"]
    rendered = _helm(helm, *args)
    with tempfile.TemporaryDirectory(prefix="meshplane-tojson-") as tmp:
        for name, text in _TO_JSON_CHART.items():
            (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / name).write_text(text)
        (Path(tmp) / "manifests.yaml").write_text(rendered)
        out = _helm(helm, "template", "tojson", tmp, "--set-file", f"manifests={Path(tmp) / 'manifests.yaml'}")
    body = "\n".join(line for line in out.splitlines() if not line.startswith(("---", "# Source:")))
    return Manifests(json.loads(body)["items"])


def pod_spec(workload: Obj) -> Obj:
    """The pod template's spec of a Deployment or Job."""
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def container(workload: Obj, name: str) -> Obj:
    for candidate in pod_spec(workload)["containers"]:
        if candidate["name"] == name:
            return dict(candidate)
    raise AssertionError(f"{workload['kind']} {workload['metadata']['name']} has no container {name!r}")


def container_port(spec: Obj, port: int | str) -> int:
    """A probe's or Service's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    for entry in spec.get("ports", []):
        if entry.get("name") == port:
            return int(entry["containerPort"])
    raise AssertionError(f"container {spec['name']} has no port named {port!r}")


# ---------------------------------------------------------------- images


@dataclass(frozen=True)
class Image:
    """What an image contributes to its containers: ENV, WORKDIR, ENTRYPOINT and CMD."""

    env: dict[str, str]
    workdir: str = "/"
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()


# The base images' own ENV (python:3.11-slim-bookworm; distroless/static-debian12).
PYTHON_BASE_ENV = {"PATH": "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
DISTROLESS_BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
}


def image_from_dockerfile(dockerfile: Path, base_env: Mapping[str, str]) -> Image:
    """ENV, WORKDIR, ENTRYPOINT and CMD of the final stage of `dockerfile` (the forms our Dockerfiles use)."""
    lines: list[str] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        if not pending and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    stages = [i for i, line in enumerate(lines) if line.split(maxsplit=1)[0].upper() == "FROM"]
    env = dict(base_env)
    workdir = "/"
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    for line in lines[stages[-1] + 1 :]:
        instruction, _, rest = line.strip().partition(" ")
        instruction = instruction.upper()
        if instruction == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)
        elif instruction == "WORKDIR":
            workdir = rest.strip()
        elif instruction == "ENTRYPOINT":
            entrypoint = tuple(json.loads(rest))
            cmd = ()  # Docker: a new ENTRYPOINT resets an inherited CMD
        elif instruction == "CMD":
            cmd = tuple(json.loads(rest))
    return Image(env=env, workdir=workdir, entrypoint=entrypoint, cmd=cmd)


# ---------------------------------------------------------------- the cluster around a pod


@dataclass
class Cluster:
    """What the cluster would supply to a pod of the release."""

    manifests: Manifests
    secrets: Mapping[str, Mapping[str, str]]
    pod_name: str
    namespace: str = NAMESPACE
    node_name: str = "test-node"
    pod_ip: str = "127.0.0.1"
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass
class LocalContainer:
    """A rendered container, ready to run here."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    mounts: dict[str, Path]  # mountPath in the container -> local directory
    spec: Obj  # the rendered container
    pod: Obj  # the rendered pod spec


class Unsupported(AssertionError):
    """The chart uses something the local emulation cannot reproduce faithfully."""


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined variables are substituted, `$$` is a literal `$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR_REF.sub(replace, value)


def service_links(manifests: Manifests) -> dict[str, str]:
    """The docker-link variables the kubelet injects for every Service with a cluster IP (fake IPs)."""
    env: dict[str, str] = {}
    for index, service in enumerate(manifests.all("Service"), start=10):
        spec = service.get("spec", {})
        if spec.get("clusterIP") == "None" or spec.get("type") == "ExternalName" or not spec.get("ports"):
            continue
        ip = f"10.96.0.{index}"
        name = service["metadata"]["name"].upper().replace("-", "_")
        first = spec["ports"][0]
        env[f"{name}_SERVICE_HOST"] = ip
        env[f"{name}_SERVICE_PORT"] = str(first["port"])
        env[f"{name}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
        for port in spec["ports"]:
            protocol = port.get("protocol", "TCP")
            if port.get("name"):
                env[f"{name}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
            prefix = f"{name}_PORT_{port['port']}_{protocol}"
            env[prefix] = f"{protocol.lower()}://{ip}:{port['port']}"
            env[f"{prefix}_PROTO"] = protocol.lower()
            env[f"{prefix}_PORT"] = str(port["port"])
            env[f"{prefix}_ADDR"] = ip
    return env


# The `kubernetes` Service of the default namespace is always announced, service links or not.
KUBERNETES_SERVICE_ENV = {
    "KUBERNETES_SERVICE_HOST": "10.96.0.1",
    "KUBERNETES_SERVICE_PORT": "443",
    "KUBERNETES_SERVICE_PORT_HTTPS": "443",
    "KUBERNETES_PORT": "tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
    "KUBERNETES_PORT_443_TCP_PORT": "443",
    "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
}


def _secret_value(cluster: Cluster, name: str, key: str) -> str | None:
    secret = cluster.secrets.get(name)
    if secret is None or key not in secret:
        return None
    return secret[key]


def _field_value(cluster: Cluster, path: str) -> str:
    simple = {
        "metadata.name": cluster.pod_name,
        "metadata.namespace": cluster.namespace,
        "spec.nodeName": cluster.node_name,
        "status.podIP": cluster.pod_ip,
        "status.hostIP": cluster.pod_ip,
    }
    if path in simple:
        return simple[path]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        source = cluster.labels if match.group(1) == "labels" else cluster.annotations
        return source.get(match.group(2), "")
    raise Unsupported(f"fieldRef {path!r} is not emulated")


def _env_from(entry: Obj, cluster: Cluster, config_maps: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    prefix = entry.get("prefix", "")
    if "configMapRef" in entry:
        ref, source, kind = entry["configMapRef"], config_maps, "ConfigMap"
    elif "secretRef" in entry:
        ref, source, kind = entry["secretRef"], cluster.secrets, "Secret"
    else:
        raise Unsupported(f"envFrom entry {entry} is not emulated")
    data = source.get(ref["name"])
    if data is None:
        if ref.get("optional"):
            return {}
        raise AssertionError(f"the pod would not start: envFrom names {kind} {ref['name']!r}, which does not exist")
    return {prefix + key: str(value) for key, value in data.items()}


def _env_entry(
    entry: Obj, env: Mapping[str, str], cluster: Cluster, config_maps: Mapping[str, Mapping[str, str]]
) -> str | None:
    if "valueFrom" not in entry:
        return expand(str(entry.get("value", "")), env)
    source = entry["valueFrom"]
    if "secretKeyRef" in source or "configMapKeyRef" in source:
        is_secret = "secretKeyRef" in source
        ref = source["secretKeyRef" if is_secret else "configMapKeyRef"]
        if is_secret:
            value = _secret_value(cluster, ref["name"], ref["key"])
        else:
            value = config_maps.get(ref["name"], {}).get(ref["key"])
        if value is None and not ref.get("optional"):
            kind = "Secret" if is_secret else "ConfigMap"
            raise AssertionError(
                f"the pod would not start (CreateContainerConfigError): {entry['name']} reads key "
                f"{ref['key']!r} of {kind} {ref['name']!r}, which the test cluster does not have"
            )
        return value
    if "fieldRef" in source:
        return _field_value(cluster, source["fieldRef"]["fieldPath"])
    raise Unsupported(f"env {entry['name']}: valueFrom {sorted(source)} is not emulated")


def _mount_volumes(pod: Obj, spec: Obj, cluster: Cluster, work_dir: Path) -> dict[str, Path]:
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    config_maps = cluster.manifests.config_map_data()
    mounts: dict[str, Path] = {}
    for mount in spec.get("volumeMounts", []):
        if mount.get("subPath") or mount.get("subPathExpr"):
            raise Unsupported(f"volumeMount {mount['name']} uses subPath")
        volume = volumes.get(mount["name"])
        if volume is None:
            raise AssertionError(f"volumeMount {mount['name']!r} names no volume of the pod")
        local = work_dir / "volumes" / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in volume:
            pass
        elif "secret" in volume or "configMap" in volume:
            is_secret = "secret" in volume
            source = volume["secret" if is_secret else "configMap"]
            name = source["secretName" if is_secret else "name"]
            data = (cluster.secrets if is_secret else config_maps).get(name)
            if data is None:
                if source.get("optional"):
                    continue
                raise AssertionError(f"the pod would not start: volume {mount['name']} needs {name!r}")
            items = source.get("items") or [{"key": key, "path": key} for key in data]
            for item in items:
                (local / item["path"]).parent.mkdir(parents=True, exist_ok=True)
                (local / item["path"]).write_text(data[item["key"]])
        else:
            raise Unsupported(f"volume {mount['name']} ({sorted(volume)}) is not emulated")
        mounts[mount["mountPath"].rstrip("/") or "/"] = local
    return mounts


def to_local_path(value: str, mounts: Mapping[str, Path]) -> str:
    """A container path under a mounted volume, as the local directory standing for that volume."""
    for mount_path in sorted(mounts, key=len, reverse=True):
        if value == mount_path or value.startswith(mount_path + "/"):
            return str(mounts[mount_path]) + value[len(mount_path) :]
    return value


def local_container(
    workload: Obj,
    container_name: str,
    *,
    image: Image,
    cluster: Cluster,
    work_dir: Path,
    executables: Mapping[str, Path],
    image_paths: Mapping[str, Path] | None = None,
) -> LocalContainer:
    """Resolve one container of a rendered Deployment/Job into argv, env and cwd for a local process.

    Precedence is the kubelet's: the image's ENV, overridden by the container environment the kubelet
    builds (service links, then `envFrom` in order, then `env` in order, each `env` value expanded
    against the variables before it). Values naming a path under a volume mount are rewritten to the
    local directory standing for that volume; `image_paths` does the same for directories of the image
    (e.g. its virtualenv's bin in PATH). The command's executable must be one of `executables`.
    """
    pod = pod_spec(workload)
    spec = container(workload, container_name)
    work_dir.mkdir(parents=True, exist_ok=True)
    mounts = _mount_volumes(pod, spec, cluster, work_dir)
    config_maps = cluster.manifests.config_map_data()

    kubelet_env: dict[str, str] = {}
    if pod.get("enableServiceLinks", True):
        kubelet_env.update(service_links(cluster.manifests))
    kubelet_env.update(KUBERNETES_SERVICE_ENV)
    for entry in spec.get("envFrom", []):
        kubelet_env.update(_env_from(entry, cluster, config_maps))
    for entry in spec.get("env", []):
        value = _env_entry(entry, kubelet_env, cluster, config_maps)
        if value is not None:
            kubelet_env[entry["name"]] = value

    env = {**image.env, "HOSTNAME": cluster.pod_name, **kubelet_env}
    for name, value in env.items():
        if name == "PATH":
            entries = [str((image_paths or {}).get(entry, entry)) for entry in value.split(":")]
            env[name] = ":".join(entries)
        else:
            env[name] = to_local_path(value, mounts)

    command = [expand(part, kubelet_env) for part in spec.get("command", [])]
    args = [expand(part, kubelet_env) for part in spec.get("args", [])]
    # A command replaces ENTRYPOINT and CMD alike; args alone replace CMD.
    argv = command + args if command else list(image.entrypoint) + (args or list(image.cmd))
    if not argv:
        raise AssertionError(f"container {container_name} has no command and its image no entrypoint")
    executable = executables.get(argv[0]) or executables.get(Path(argv[0]).name)
    if executable is None:
        raise Unsupported(f"container {container_name} runs {argv[0]!r}, which the test cannot run locally")
    argv[0] = str(executable)

    workdir = spec.get("workingDir") or image.workdir
    local_cwd = to_local_path(workdir, mounts)
    if local_cwd == workdir:  # not on a volume: somewhere in the image's (read-only) filesystem
        local_cwd = str(work_dir / "rootfs")
        Path(local_cwd).mkdir(parents=True, exist_ok=True)
    return LocalContainer(argv=argv, env=env, cwd=Path(local_cwd), mounts=mounts, spec=spec, pod=pod)
