"""Generate deploy/helm/meshplane/values.schema.json (JSON Schema draft-07, as Helm validates it).

The schema is written here, in Python, so shared parts (images, probes, PDBs, autoscaling) are
defined once and every object forbids unknown keys. Run after changing values:

    python3 tools/helm-schema/gen_values_schema.py          # rewrite the schema
    python3 tools/helm-schema/gen_values_schema.py --check  # fail if it is out of date (make helm-check)

Where a rule needs a clear message, a `const` holding the message is used: a wrong value cannot
equal it, and Helm prints "value must be '<the message>'" at the offending path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "deploy/helm/meshplane/values.schema.json"
DURATION = {
    "type": "string",
    "pattern": r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$",
    "description": "A duration: a number and a unit, e.g. 500ms, 30s, 2m, 1h.",
}
# Retention settings also take days (the control plane parses "7d"; Go and Prometheus durations do not).
RETENTION = {
    "type": "string",
    "pattern": r"^[0-9]+(\.[0-9]+)?(ms|s|m|h|d)$",
    "description": "A retention: a number and a unit, e.g. 12h, 7d; 0s keeps everything.",
}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
QUANTITY = {"type": ["string", "number"], "pattern": r"^[+]?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+|[mkMGTPE]|[KMGTPE]i)?$"}
NAME = {
    "type": "string",
    "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
    "maxLength": 253,
    "description": "A Kubernetes object name (lower-case DNS subdomain).",
}
NAME_OR_EMPTY = {"type": "string", "pattern": r"^$|^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}
KEY = {
    "type": "string",
    "pattern": r"^[-._a-zA-Z0-9]+$",
    "maxLength": 253,
    "description": "A key in a Secret or ConfigMap.",
}
CHART_SET_ENV = [
    "MESHPLANE_LISTEN",
    "MESHPLANE_DATA_DIR",
    "MESHPLANE_NATS_URL",
    "MESHPLANE_HEARTBEAT_INTERVAL",
    "MESHPLANE_LEASE_TIMEOUT",
    "MESHPLANE_DRAIN_TIMEOUT",
    "MESHPLANE_MAX_PAYLOAD_BYTES",
    "MESHPLANE_DEFAULT_STRATEGY",
    "MESHPLANE_DB_POOL_SIZE",
    "MESHPLANE_TASK_RETENTION",
    "MESHPLANE_AUDIT_RETENTION",
    "MESHPLANE_CHANNEL_RETENTION",
    "MESHPLANE_INSTANCE_RETENTION",
    "MESHPLANE_METRICS_LISTEN",
    "MESHPLANE_HEALTH_LISTEN",
    "MESHPLANE_TLS_CERT_FILE",
    "MESHPLANE_TLS_KEY_FILE",
    "MESHPLANE_TLS_CLIENT_CA_FILE",
    "MESHPLANE_NATS_TLS_CA_FILE",
    "MESHPLANE_NATS_TLS_CERT_FILE",
    "MESHPLANE_NATS_TLS_KEY_FILE",
    "MESHPLANE_LOG_LEVEL",
    "MESHPLANE_LOG_FORMAT",
    "MESHPLANE_REPLICA_ID",
    "MESHPLANE_DATABASE_URL",
    "MESHPLANE_AUTH_TOKENS",
]
SECRET_ENV = ["MESHPLANE_DATABASE_URL", "MESHPLANE_AUTH_TOKENS"]
# Messages carried by consts that a wrong value cannot meet: the schema error then says what to do.
MSG_SECRET_ENV = "<not allowed: take this variable from a Secret with valueFrom.secretKeyRef, never a clear-text value>"
MSG_SECRET_KEY = "<not allowed: secrets come from database.existingSecret / auth.existingSecret, never from values>"
MSG_CHART_KEY = "<not allowed: the chart sets this variable from its own value; set that value instead>"
MSG_EXTRA_NAME = "<not allowed: extraConfig keys must be MESHPLANE_* setting names in upper case>"
MSG_DB_SECRET = "<name of an existing Secret holding the PostgreSQL URL: required unless embedded.enabled=true>"
MSG_NATS_URL = "<nats://host:4222 of your NATS (or nats.existingSecret): required unless embedded.enabled=true>"


def obj(
    props: dict[str, Any],
    required: list[str] | None = None,
    if_: dict[str, Any] | None = None,
    then: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An object schema that rejects unknown keys; every property is required unless told otherwise."""
    o: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": props}
    if required is None:
        required = list(props)
    if required:
        o["required"] = required
    if if_ is not None:
        o["if"], o["then"] = if_, then
    return o


defs = {
    "duration": DURATION,
    "retention": RETENTION,
    "port": PORT,
    "stringMap": STRMAP,
    "image": obj(
        {
            "registry": {
                "type": "string",
                "pattern": r"^$|^[a-zA-Z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*$",
                "description": "Registry host[:port], or empty.",
            },
            "repository": {"type": "string", "minLength": 1, "pattern": r"^[a-z0-9]+([._/-][a-z0-9]+)*$"},
            "tag": {
                "type": "string",
                "pattern": r"^$|^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
                "description": "Image tag; empty means the chart's appVersion.",
            },
            "digest": {
                "type": "string",
                "pattern": r"^$|^sha256:[a-f0-9]{64}$",
                "description": "Image digest sha256:<64 hex>, or empty.",
            },
            "pullPolicy": {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]},
        }
    ),
    "resources": obj(
        {
            "requests": {"type": "object", "additionalProperties": QUANTITY},
            "limits": {"type": "object", "additionalProperties": QUANTITY},
            "claims": {"type": "array", "items": {"type": "object"}},
        },
        required=[],
    ),
    "envList": {
        "type": "array",
        "description": "Kubernetes EnvVar entries. Secrets go in valueFrom.secretKeyRef, never in value.",
        "items": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"},
                "value": {"type": "string"},
                "valueFrom": {"type": "object"},
            },
            "additionalProperties": False,
            # A const that cannot be met, so the error message says what to do.
            "if": {"properties": {"name": {"enum": SECRET_ENV}}, "required": ["name", "value"]},
            "then": {"properties": {"value": {"const": MSG_SECRET_ENV}}},
        },
    },
    "probe": obj(
        {
            "periodSeconds": {"type": "integer", "minimum": 1},
            "timeoutSeconds": {"type": "integer", "minimum": 1},
            "failureThreshold": {"type": "integer", "minimum": 1},
        }
    ),
    "readinessProbe": obj(
        {
            "periodSeconds": {"type": "integer", "minimum": 1},
            "timeoutSeconds": {"type": "integer", "minimum": 1},
            "failureThreshold": {"type": "integer", "minimum": 1},
            "successThreshold": {"type": "integer", "minimum": 1},
        }
    ),
    "intOrPercent": {
        "type": ["integer", "string"],
        "minimum": 0,
        "pattern": r"^$|^[0-9]+%?$",
        "description": 'An integer, a percentage like "50%", or "" for unset.',
    },
    "pdb": obj(
        {
            "enabled": {"type": "boolean"},
            "minAvailable": {"$ref": "#/definitions/intOrPercent"},
            "maxUnavailable": {"$ref": "#/definitions/intOrPercent"},
        },
        if_={"properties": {"minAvailable": {"not": {"const": ""}}}},
        then={
            "properties": {
                "maxUnavailable": {
                    "const": "",
                    "$comment": 'Set only one of minAvailable and maxUnavailable; the other must be "".',
                }
            }
        },
    ),
    "autoscaling": obj(
        {
            "enabled": {"type": "boolean"},
            "minReplicas": {"type": "integer", "minimum": 1},
            "maxReplicas": {"type": "integer", "minimum": 1},
            "targetCPUUtilizationPercentage": {"type": "integer", "minimum": 0},
            "targetMemoryUtilizationPercentage": {"type": "integer", "minimum": 0},
            "behavior": {"type": "object"},
        }
    ),
    "antiAffinity": {"type": "string", "enum": ["soft", "hard", "none"]},
    "service": obj(
        {
            "type": {"type": "string", "enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
            "port": {"$ref": "#/definitions/port"},
            "annotations": {"$ref": "#/definitions/stringMap"},
        }
    ),
    "peers": {
        "type": "array",
        "items": {"type": "object"},
        "description": "Kubernetes NetworkPolicyPeer entries (podSelector / namespaceSelector / ipBlock).",
    },
}

# The metrics parts of the control plane and the gateway: the same ServiceMonitor settings, and a
# ServiceMonitor needs the metrics endpoint it scrapes.
SERVICE_MONITOR = obj(
    {
        "enabled": {"type": "boolean"},
        "namespace": NAME_OR_EMPTY,
        "labels": {"$ref": "#/definitions/stringMap"},
        "interval": {"$ref": "#/definitions/duration"},
        "scrapeTimeout": {"$ref": "#/definitions/duration"},
        "relabelings": {"type": "array", "items": {"type": "object"}},
        "metricRelabelings": {"type": "array", "items": {"type": "object"}},
    }
)
METRICS_SERVICE = obj({"port": {"$ref": "#/definitions/port"}, "annotations": {"$ref": "#/definitions/stringMap"}})
SERVICE_MONITOR_NEEDS_METRICS: dict[str, Any] = {
    "if_": {"properties": {"serviceMonitor": {"properties": {"enabled": {"const": True}}}}},
    "then": {"properties": {"enabled": {"const": True, "$comment": "A ServiceMonitor needs the metrics endpoint."}}},
}

# A certificate a component serves (controlPlane.tls, gateway.tls): from an existing Secret, renewed in place.
SERVED_CERTIFICATE = {
    "enabled": {"type": "boolean"},
    "existingSecret": NAME_OR_EMPTY,
    "certKey": KEY,
    "keyKey": KEY,
}
# The CA bundle whose certificates a component requires of its clients (mutual TLS).
CLIENT_CA = obj({"existingSecret": NAME_OR_EMPTY, "key": KEY})

scheduling = {
    "podAnnotations": {"$ref": "#/definitions/stringMap"},
    "podLabels": {"$ref": "#/definitions/stringMap"},
    "rollOnConfigChange": {"type": "boolean"},
    "podSecurityContext": {"type": "object"},
    "securityContext": {"type": "object"},
    "podAntiAffinity": {"$ref": "#/definitions/antiAffinity"},
    "affinity": {"type": "object"},
    "topologySpreadConstraints": {"type": "array", "items": {"type": "object"}},
    "nodeSelector": {"$ref": "#/definitions/stringMap"},
    "tolerations": {"type": "array", "items": {"type": "object"}},
    "priorityClassName": {"type": "string"},
}

control_plane = obj(
    {
        "replicas": {"type": "integer", "minimum": 0, "description": "Number of control-plane replicas (>= 0)."},
        "image": {"$ref": "#/definitions/image"},
        "config": obj(
            {
                "heartbeatInterval": {"$ref": "#/definitions/duration"},
                "leaseTimeout": {"$ref": "#/definitions/duration"},
                "drainTimeout": {"$ref": "#/definitions/duration"},
                "maxPayloadBytes": {"type": "integer", "minimum": 1024, "maximum": 536870911},
                "defaultStrategy": {
                    "type": "string",
                    "enum": ["least_loaded", "round_robin", "weighted", "consistent_hash"],
                },
                "dbPoolSize": {"type": "integer", "minimum": 1, "maximum": 200},
                "taskRetention": {"$ref": "#/definitions/retention"},
                "auditRetention": {"$ref": "#/definitions/retention"},
                "channelRetention": {"$ref": "#/definitions/retention"},
                "instanceRetention": {"$ref": "#/definitions/retention"},
                "logLevel": {"type": "string", "enum": ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]},
                "logFormat": {"type": "string", "enum": ["json", "text"]},
            }
        ),
        "extraConfig": {
            "type": "object",
            "description": "Extra MESHPLANE_* settings; not the ones the chart sets, never secrets.",
            "properties": {k: {"const": MSG_SECRET_KEY if k in SECRET_ENV else MSG_CHART_KEY} for k in CHART_SET_ENV},
            "patternProperties": {r"^MESHPLANE_[A-Z0-9_]+$": {"type": ["string", "number", "boolean"]}},
            "additionalProperties": {"const": MSG_EXTRA_NAME},
        },
        "extraEnv": {"$ref": "#/definitions/envList"},
        "listenHost": {"type": "string", "minLength": 1, "pattern": r"^[0-9a-fA-F.:]+$|^[a-z0-9.-]+$"},
        "ports": obj(
            {
                "grpc": {"$ref": "#/definitions/port"},
                "metrics": {"$ref": "#/definitions/port"},
                "health": {"$ref": "#/definitions/port"},
            }
        ),
        "tls": obj(
            {
                **SERVED_CERTIFICATE,
                "clientCA": CLIENT_CA,
            }
        ),
        "terminationGracePeriodSeconds": {
            "type": "integer",
            "minimum": 1,
            "description": "Must exceed config.drainTimeout + preStopSleepSeconds (checked by the templates).",
        },
        "preStopSleepSeconds": {"type": "integer", "minimum": 0},
        "resources": {"$ref": "#/definitions/resources"},
        "probes": obj(
            {
                "startup": obj(
                    {
                        "enabled": {"type": "boolean"},
                        "periodSeconds": {"type": "integer", "minimum": 1},
                        "timeoutSeconds": {"type": "integer", "minimum": 1},
                        "failureThreshold": {"type": "integer", "minimum": 1},
                    }
                ),
                "readiness": {"$ref": "#/definitions/readinessProbe"},
                "liveness": obj(
                    {
                        "periodSeconds": {"type": "integer", "minimum": 1},
                        "timeoutSeconds": {"type": "integer", "minimum": 1},
                        "failureThreshold": {"type": "integer", "minimum": 1},
                        "grpcService": {"type": "string"},
                    },
                    required=["periodSeconds", "timeoutSeconds", "failureThreshold"],
                ),
            }
        ),
        **scheduling,
        "tmpSizeLimit": QUANTITY,
        "service": obj(
            {
                "type": {"type": "string", "enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                "port": {"$ref": "#/definitions/port"},
                "annotations": {"$ref": "#/definitions/stringMap"},
                "headless": {"type": "boolean"},
            }
        ),
        "metrics": obj(
            {"enabled": {"type": "boolean"}, "service": METRICS_SERVICE, "serviceMonitor": SERVICE_MONITOR},
            **SERVICE_MONITOR_NEEDS_METRICS,
        ),
        "pdb": {"$ref": "#/definitions/pdb"},
        "autoscaling": {"$ref": "#/definitions/autoscaling"},
    }
)

gateway = obj(
    {
        "enabled": {"type": "boolean"},
        "replicas": {"type": "integer", "minimum": 0, "description": "Number of gateway replicas (>= 0)."},
        "image": {"$ref": "#/definitions/image"},
        "config": obj(
            {
                "corsOrigins": {
                    "type": "array",
                    "items": {"type": "string", "pattern": r"^\*$|^https?://[^\s,]+$"},
                    "description": 'Origins like https://app.example.com, or "*".',
                },
                "maxRequestBytes": {"type": "integer", "minimum": 1024},
                "upstreamConnections": {"type": "integer", "minimum": 1, "maximum": 64},
                "submitBatchMax": {"type": "integer", "minimum": 1, "maximum": 1000},
                "submitBatchesInFlight": {"type": "integer", "minimum": 1, "maximum": 64},
                "shutdownTimeout": {"$ref": "#/definitions/duration"},
                "logLevel": {"type": "string", "enum": ["debug", "info", "warn", "error"]},
                "logFormat": {"type": "string", "enum": ["json", "text"]},
                "upstream": {
                    "type": "string",
                    "pattern": r"^$|^\S+:[0-9]+$",
                    "description": "host:port, or empty for the control-plane Service.",
                },
                "upstreamTLS": obj(
                    {
                        "enabled": {"type": "boolean"},
                        "serverName": {"type": "string"},
                        "caSecret": obj({"name": NAME_OR_EMPTY, "key": KEY}),
                        "clientCertSecret": obj({"name": NAME_OR_EMPTY, "certKey": KEY, "keyKey": KEY}),
                    },
                    if_={"properties": {"enabled": {"const": False}}},
                    then={
                        "properties": {
                            "serverName": {"const": "", "$comment": "needs enabled=true"},
                            "caSecret": {"properties": {"name": {"const": "", "$comment": "needs enabled=true"}}},
                            "clientCertSecret": {
                                "properties": {"name": {"const": "", "$comment": "needs enabled=true"}}
                            },
                        }
                    },
                ),
            }
        ),
        "tls": obj({**SERVED_CERTIFICATE, "clientCA": CLIENT_CA}),
        "extraEnv": {"$ref": "#/definitions/envList"},
        "port": {"$ref": "#/definitions/port"},
        "grpcIngress": obj({"enabled": {"type": "boolean"}, "port": {"$ref": "#/definitions/port"}}),
        "metrics": obj(
            {
                "enabled": {"type": "boolean"},
                "port": {"$ref": "#/definitions/port"},
                "service": METRICS_SERVICE,
                "serviceMonitor": SERVICE_MONITOR,
            },
            **SERVICE_MONITOR_NEEDS_METRICS,
        ),
        "resources": {"$ref": "#/definitions/resources"},
        "probes": obj(
            {"readiness": {"$ref": "#/definitions/readinessProbe"}, "liveness": {"$ref": "#/definitions/probe"}}
        ),
        "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
        **scheduling,
        "service": {"$ref": "#/definitions/service"},
        "pdb": {"$ref": "#/definitions/pdb"},
        "autoscaling": {"$ref": "#/definitions/autoscaling"},
    }
)

schema = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Values of the Meshplane Helm chart",
    "description": "See README.md for every value. Unknown keys are rejected so typos fail loudly.",
    "definitions": defs,
    **obj(
        {
            "global": {"type": "object", "description": "Reserved by Helm for parent charts."},
            "nameOverride": {"type": "string", "maxLength": 63},
            "fullnameOverride": {"type": "string", "maxLength": 63},
            "commonLabels": {"$ref": "#/definitions/stringMap"},
            "imagePullSecrets": {"type": "array", "items": NAME},
            "serviceAccount": obj(
                {
                    "create": {"type": "boolean"},
                    "name": NAME_OR_EMPTY,
                    "annotations": {"$ref": "#/definitions/stringMap"},
                    "automountToken": {"type": "boolean"},
                }
            ),
            "database": obj(
                {
                    "existingSecret": {
                        **NAME_OR_EMPTY,
                        "description": "Existing Secret with the database URL; required unless embedded.enabled.",
                    },
                    "secretKey": KEY,
                }
            ),
            "nats": obj(
                {
                    "url": {
                        "type": "string",
                        "pattern": r"^$|^(nats|tls|ws|wss)://[^\s,@]+(,(nats|tls|ws|wss)://[^\s,@]+)*$",
                        "description": (
                            "nats://host:port[,nats://...] without credentials (use existingSecret for those); "
                            "required unless embedded.enabled."
                        ),
                    },
                    "existingSecret": NAME_OR_EMPTY,
                    "secretKey": KEY,
                    "tls": obj(
                        {
                            "caSecret": obj({"name": NAME_OR_EMPTY, "key": KEY}),
                            "clientCertSecret": obj({"name": NAME_OR_EMPTY, "certKey": KEY, "keyKey": KEY}),
                        }
                    ),
                }
            ),
            "auth": obj({"existingSecret": NAME_OR_EMPTY, "secretKey": KEY}),
            "embedded": obj({"enabled": {"type": "boolean"}}),
            "controlPlane": control_plane,
            "migrations": obj(
                {
                    "enabled": {"type": "boolean"},
                    "backoffLimit": {"type": "integer", "minimum": 0},
                    "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
                    "resources": {"$ref": "#/definitions/resources"},
                    "podAnnotations": {"$ref": "#/definitions/stringMap"},
                    "extraEnv": {"$ref": "#/definitions/envList"},
                }
            ),
            "gateway": gateway,
            "networkPolicy": obj(
                {
                    "enabled": {"type": "boolean"},
                    "allowExternal": {"type": "boolean"},
                    "ingressFrom": {"$ref": "#/definitions/peers"},
                    "metricsFrom": {"$ref": "#/definitions/peers"},
                    "gatewayFrom": {"$ref": "#/definitions/peers"},
                    "egress": obj(
                        {
                            "enabled": {"type": "boolean"},
                            "to": {"$ref": "#/definitions/peers"},
                            "databasePort": {"$ref": "#/definitions/port"},
                            "natsPort": {"$ref": "#/definitions/port"},
                            "extra": {"type": "array", "items": {"type": "object"}},
                        }
                    ),
                }
            ),
        },
        required=[
            "serviceAccount",
            "database",
            "nats",
            "auth",
            "embedded",
            "controlPlane",
            "migrations",
            "gateway",
            "networkPolicy",
        ],
    ),
    "if": {"properties": {"embedded": {"properties": {"enabled": {"const": True}}}}},
    "then": {
        "description": "Embedded mode runs one pod: no more replicas, no autoscaling.",
        "properties": {
            "controlPlane": {
                "properties": {"replicas": {"maximum": 1}, "autoscaling": {"properties": {"enabled": {"const": False}}}}
            }
        },
    },
    "else": {
        "description": "Production mode needs an external PostgreSQL (Secret) and NATS.",
        "properties": {
            "database": {
                "if": {"properties": {"existingSecret": {"const": ""}}},
                "then": {"properties": {"existingSecret": {"const": MSG_DB_SECRET}}},
            },
            "nats": {
                "if": {"properties": {"url": {"const": ""}, "existingSecret": {"const": ""}}},
                "then": {"properties": {"url": {"const": MSG_NATS_URL}}},
            },
        },
    },
}
# Keep the definitions block after the keywords for readability.
order = [
    "$schema",
    "title",
    "description",
    "type",
    "additionalProperties",
    "required",
    "properties",
    "if",
    "then",
    "else",
    "definitions",
]
schema = {k: schema[k] for k in order}


def main() -> int:
    text = json.dumps(schema, indent=2) + "\n"
    if sys.argv[1:] == ["--check"]:
        if SCHEMA_PATH.read_text() != text:
            print(f"{SCHEMA_PATH} is out of date: run python3 tools/helm-schema/gen_values_schema.py")
            return 1
        print(f"{SCHEMA_PATH.name} is up to date with {Path(__file__).name}")
        return 0
    SCHEMA_PATH.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
