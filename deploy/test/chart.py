#!/usr/bin/env python3
"""The Helm chart, checked with the real Helm engine and the real binaries.

For the default values and a few value sets: render and lint with Helm v4's Go SDK
(helm-python-sdk), validate every object against the Kubernetes schemas (kubernetes-validate),
and run every rendered Damselfly container's command, args, environment and mounted files with
--check-config (configure init containers with --dry-run) inside the built image, so the chart
cannot drift from the binaries' flags and keys. Value sets that must not render are refused.

Needs: the image damselfly:<appVersion> (deploy/docker/build.sh), Docker, and the two PyPI
packages (scripts/install-deps.sh --deploy installs them in a virtualenv).
"""
import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile

import kubernetes_validate
import yaml
from helm_python import chart as helm

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "helm", "damselfly")
K8S_VERSION = "1.31.0"
CRDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}

LAB = {
    "tls": {"enabled": False},
    "insecureLab": True,
    "registries": [
        {"name": "registry.lab:5000", "url": "http://registry.lab:5000"},
        {"name": "docker.io", "url": "https://registry-1.docker.io"},
    ],
    "redis": {"bundled": False, "external": {"url": "redis://:pw@redis.lab:6379/0"}},
    "agent": {"containerd": {"allRegistries": True}, "uploadRateLimit": "1125MB", "rack": "r12"},
}
MONITORED = {
    "tls": {"enabled": False},
    "insecureLab": True,
    "edge": {"replicas": 3, "quota": "50GiB", "extraConfig": "[limits]\npiece_sends = 8\n"},
    "metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True},
                "prometheusRule": {"enabled": True}},
    "preheater": {"replicas": 2},
}
VALUE_SETS = {"default": {}, "lab": LAB, "monitored": MONITORED}
REFUSED = {
    "tls off without insecureLab": {"tls": {"enabled": False}},
    "no registry": {"registries": []},
    "unknown key": {"edge": {"quotta": "1GiB"}},
}

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok: {name}")
    else:
        failed += 1
        print(f"FAILED: {name}\n{detail}")


def render(values):
    chart = helm.Chart.load(CHART)
    files = chart.render(values, name="df", namespace="damselfly", is_install=True)
    docs = []
    for path, text in sorted(files.items()):
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def validate(docs):
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            if doc["kind"] not in CRDS or "spec" not in doc:
                errors.append(f"{doc['kind']}: no schema")
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")
    return errors


def image_supports_tls(image):
    out = subprocess.run(["docker", "run", "--rm", "--network", "none", image, "edge-cache", "--help"],
                         capture_output=True, text=True, timeout=60)
    return "--tls-cert" in out.stdout


def expand(value, env):
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def run_container(image, pod, container, docs, values, scratch):
    """The container's command with --check-config (or configure's --dry-run) in the image."""
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = expand(e["value"], env)
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = {"status.hostIP": "10.1.2.3", "spec.nodeName": "node-1"}[e["valueFrom"]["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in e.get("valueFrom", {}):
            key = e["valueFrom"]["secretKeyRef"]["key"]
            env[e["name"]] = values.get("redis", {}).get("external", {}).get("url") if key == "redis-url" else "t" * 40
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    args = ["docker", "run", "--rm", "--network", "none"]
    user = (container.get("securityContext") or {}).get("runAsUser", pod.get("securityContext", {}).get("runAsUser"))
    if user is not None:
        args += ["--user", str(user)]
    for mount in container.get("volumeMounts", []):
        # A volumeClaimTemplate (the edge's data) is no pod volume: an empty directory here.
        volume = volumes.get(mount["name"], {"emptyDir": {}})
        host = os.path.join(scratch, f"{container['name']}-{mount['name']}")
        os.makedirs(host, exist_ok=True)
        if "configMap" in volume:
            data = by_name[("ConfigMap", volume["configMap"]["name"])]["data"]
            for key, text in data.items():
                with open(os.path.join(host, key), "w") as f:
                    f.write(text)
        elif "secret" in volume:
            items = volume["secret"].get("items") or [{"key": k, "path": k} for k in ("tls.crt", "tls.key", "ca.crt")]
            for item in items:
                path = os.path.join(host, item["path"])
                with open(path, "w") as f:
                    f.write("s" * 48)
                os.chmod(path, volume["secret"].get("defaultMode", 0o644))
                os.chown(path, 0, 10001)
        else:
            os.chown(host, 10001, 10001)
        source = os.path.join(host, mount["subPath"]) if "subPath" in mount else host
        args += ["-v", f"{source}:{mount['mountPath']}" + (":ro" if mount.get("readOnly") else "")]
    for name, value in env.items():
        args += ["-e", f"{name}={value}"]
    command = container["command"] + container.get("args", [])
    command = command + (["--dry-run"] if command[1:2] == ["configure"] else ["--check-config"])
    out = subprocess.run(args + ["--entrypoint", command[0], image] + command[1:],
                         capture_output=True, text=True, timeout=60)
    return out.returncode == 0, " ".join(command) + "\n" + out.stdout[-1500:] + out.stderr[-1500:]


def main():
    app_version = yaml.safe_load(open(os.path.join(CHART, "Chart.yaml")))["appVersion"]
    image = f"damselfly:{app_version}"
    lint = helm.lint(CHART)
    check("helm lint", not lint["errors"], str(lint))
    tls = image_supports_tls(image)
    for set_name, values in VALUE_SETS.items():
        try:
            docs = render(copy.deepcopy(values))
        except Exception as e:  # noqa: BLE001 - the engine's error is the detail
            check(f"{set_name}: renders", False, str(e))
            continue
        check(f"{set_name}: renders ({len(docs)} objects)", bool(docs))
        errors = validate(docs)
        check(f"{set_name}: every object validates against Kubernetes {K8S_VERSION}", not errors, "\n".join(errors))
        merged = {**yaml.safe_load(open(os.path.join(CHART, "values.yaml"))), **values}
        if merged["tls"].get("enabled", True) and not tls:
            print(f"pending: {set_name}: the binaries in {image} do not know [tls] yet; its configs are checked once they do")
            continue
        scratch = tempfile.mkdtemp(prefix="dmsf-chart-")
        try:
            for doc in docs:
                if doc["kind"] not in ("Deployment", "StatefulSet", "DaemonSet"):
                    continue
                pod = doc["spec"]["template"]["spec"]
                for container in pod.get("initContainers", []) + pod["containers"]:
                    is_ours = container["image"].startswith("damselfly:")
                    if not is_ours or container["command"][0] not in ("edge-cache", "peer-agent", "preheater"):
                        continue
                    ok, detail = run_container(image, pod, container, docs, merged, scratch)
                    check(f"{set_name}: {doc['kind']}/{container['name']} --check-config in the image", ok, detail)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    for name, values in REFUSED.items():
        try:
            render(values)
            check(f"refused: {name}", False, "rendered")
        except Exception:  # noqa: BLE001 - any refusal from the engine will do
            check(f"refused: {name}", True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
