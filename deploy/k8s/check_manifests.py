"""What Kubernetes' schemas do not check in deploy/k8s: that the manifests agree with each
other, with the Dockerfile and with the binary.

usage: check_manifests.py K8S_DIR DOCKERFILE ENV_VAR...   (ENV_VAR: the variables the binary
reads, from its --help; AWS_*, GOOGLE_* and AZURE_* variables are read by the object-store
clients). Manifests in
K8S_DIR's subdirectories (variants such as sweep/) are checked too; the kustomization lists
K8S_DIR's own.
Exits 1 with one line per problem.
"""
import pathlib
import re
import sys

import yaml

k8s, dockerfile, env_vars = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), set(sys.argv[3:])
problems = []
docs = {}
for path in sorted(k8s.glob("**/*.yaml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            docs.setdefault(doc["kind"], []).append((path.name, doc))


def args_of(container):
    return dict(a[2:].split("=", 1) for a in container.get("args", []) if a.startswith("--") and "=" in a)


deployments = {d["metadata"]["name"]: (f, d) for f, d in docs.get("Deployment", [])}
workloads = dict(deployments)
workloads.update({d["metadata"]["name"]: (f, d) for f, d in docs.get("Job", [])})
services = {d["metadata"]["name"]: d for _, d in docs.get("Service", [])}
uid = re.search(r"^USER\s+(\d+)", dockerfile.read_text(), re.M)
for name, (f, d) in workloads.items():
    labels = d["spec"]["template"]["metadata"]["labels"]
    for k, v in d["spec"].get("selector", {}).get("matchLabels", {}).items():
        if labels.get(k) != v:
            problems.append(f"{f}: {name}'s selector {k}={v} does not match its pod labels")
    pod = d["spec"]["template"]["spec"]
    if uid and pod.get("securityContext", {}).get("runAsUser") != int(uid.group(1)):
        problems.append(f"{f}: {name} runs as {pod.get('securityContext', {}).get('runAsUser')}, the image's user is {uid.group(1)}")
    for c in pod["containers"]:
        a = args_of(c)
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        listen = a.get("metrics-listen", "")
        for probe in ("readinessProbe", "livenessProbe"):
            get = c.get(probe, {}).get("httpGet")
            if not get:
                problems.append(f"{f}: {name} has no HTTP {probe}")
                continue
            want = "/readyz" if probe == "readinessProbe" else "/healthz"
            if get["path"] != want:
                problems.append(f"{f}: {name}'s {probe} asks {get['path']}, the binary serves {want}")
            port = ports.get(get["port"], get["port"])
            if not listen.endswith(f":{port}"):
                problems.append(f"{f}: {name}'s {probe} port {port} is not --metrics-listen ({listen or 'unset'})")
        if "coordinator" in a:
            m = re.fullmatch(r"https?://([^:/]+):(\d+)", a["coordinator"])
            svc = services.get(m.group(1)) if m else None
            if not svc or int(m.group(2)) not in [p["port"] for p in svc["spec"]["ports"]]:
                problems.append(f"{f}: {name}'s --coordinator {a['coordinator']} names no Service port")
            else:
                target = deployments.get(svc["metadata"]["name"])
                sel = svc["spec"]["selector"]
                if not target or any(target[1]["spec"]["template"]["metadata"]["labels"].get(k) != v for k, v in sel.items()):
                    problems.append(f"{f}: Service {svc['metadata']['name']} does not select the coordinator's pods")
for f, s in docs.get("Secret", []) + docs.get("ConfigMap", []):
    for key in list(s.get("stringData", {})) + list(s.get("data", {})):
        if key not in env_vars and not key.startswith(("AWS_", "GOOGLE_", "AZURE_")):
            problems.append(f"{f}: {s['kind']} key {key} is no variable the binary reads")
kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
manifests = {p.name for p in k8s.glob("*.yaml")} - {"kustomization.yaml"}
if set(kustomization["resources"]) != manifests:
    problems.append(f"kustomization.yaml lists {sorted(kustomization['resources'])}, the directory holds {sorted(manifests)}")
print("\n".join(problems))
sys.exit(1 if problems else 0)
