"""Check the KubeRay manifests in deploy/kuberay/ against KubeRay's own CRD schemas, offline.

    python deploy/check_kuberay.py --kuberay KUBERAY_CLONE --refs v1.0.0,v1.1.0,…,master

No Kubernetes cluster is at hand here, so the manifests have never been applied. What `kubectl apply`
would check first is the custom resource's OpenAPI schema: each RayCluster, RayJob and RayService
document is validated against the `v1` schema of its CRD (types, enums, required fields) and, as the
API server's strict field validation does, every key must be a field the schema knows (the schema
does not forbid unknown keys itself: Kubernetes would prune them silently, so a misspelt key would
be lost, not refused). Each ref (a release tag or a commit of a KubeRay clone) is checked in turn,
which tells from which KubeRay release on the manifests hold. Documents of core kinds (the CronJob,
the PersistentVolumeClaim) are validated once, by the Kubernetes Python client's own models of them
(pydantic: types, required fields, and no field they do not know), at the Kubernetes version of the
client installed (`pip install ".[deploy]"`). To show the check is not vacuous, each document is
checked again with one misspelt key deep inside (a container's `limits`, a CronJob pod's
`restartPolicy`, a claim's `accessModes`), which must fail. Writes `deploy/kuberay/schema-check.json`;
exits 1 when the last ref or a core kind has a finding.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import yaml
from jsonschema import Draft7Validator

DEPLOY = Path(__file__).resolve().parent
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml",
             "RayService": "ray.io_rayservices.yaml"}
CRD_DIR = "ray-operator/config/crd/bases"
CORE_MODELS = {("batch/v1", "CronJob"): "V1CronJob", ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim"}
MISSPELT = {"CronJob": "restartPolicy", "PersistentVolumeClaim": "accessModes"}  # else a container's limits


def crd_schema(kuberay: Path, ref: str, kind: str, version: str) -> dict:
    text = subprocess.run(["git", "-C", str(kuberay), "show", f"{ref}:{CRD_DIR}/{CRD_FILES[kind]}"],
                          capture_output=True, text=True, check=True).stdout
    crd = yaml.safe_load(text)
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return served["schema"]["openAPIV3Schema"]


def unknown_fields(value, schema: dict, path: str = "") -> list[str]:
    """Keys of `value` that `schema` has no field for, recursively (what strict field validation refuses)."""
    found = []
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        open_ended = schema.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in schema
        for key, item in value.items():
            if props is not None and key in props:
                found += unknown_fields(item, props[key], f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                found += unknown_fields(item, schema["additionalProperties"], f"{path}.{key}")
            elif props is not None and not open_ended:
                found.append(f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def findings(doc: dict, schema: dict) -> list[str]:
    errors = [f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
              for e in Draft7Validator(schema).iter_errors(doc)]
    return errors + [f"{key[1:]}: unknown field" for key in unknown_fields(doc, schema)]


def misspelt(doc: dict) -> tuple[dict, str]:
    """`doc` with its first key named `MISSPELT[kind]` (depth first; a container's `resources.limits`
    for KubeRay's kinds) misspelt with an x: a key deep in the pod template, where a CRD's schema is
    Kubernetes' own inlined."""
    doc = copy.deepcopy(doc)
    name = MISSPELT.get(doc["kind"], "limits")

    def find(node, path):
        if isinstance(node, dict):
            if name in node:
                node[name + "x"] = node.pop(name)
                return f"{path}.{name}x"
            children = node.items()
        elif isinstance(node, list):
            children = ((f"[{i}]", item) for i, item in enumerate(node))
        else:
            return None
        for key, child in children:
            if (found := find(child, f"{path}{key}" if key.startswith("[") else f"{path}.{key}")) is not None:
                return found
        return None

    if (key := find(doc, "")) is None:
        raise SystemExit(f"{doc['kind']} {doc['metadata']['name']}: no key {name} to misspell")
    return doc, key[1:]


def documents() -> list[tuple[str, dict]]:
    """Every YAML document in deploy/kuberay/, with the file it is in."""
    return [(str(manifest.relative_to(DEPLOY.parent)), doc) for manifest in sorted((DEPLOY / "kuberay").glob("*.yaml"))
            for doc in yaml.safe_load_all(manifest.read_text()) if doc]


def checked(file: str, doc: dict, findings_of: Callable[[dict], list[str]], against: str) -> dict:
    """`doc`'s findings, and whether the same document with a key misspelt has that key's finding."""
    row = {"file": file, "kind": doc["kind"], "findings": findings_of(doc)}
    bad, key = misspelt(doc)
    row["misspelt_key"] = key
    row["misspelt_key_refused"] = any(f.startswith(key + ":") for f in findings_of(bad))
    row["ok"] = not row["findings"] and row["misspelt_key_refused"]
    print(f"{against} {file} {doc['kind']}: {len(row['findings'])} finding(s); "
          f"misspelt {key}: {'refused' if row['misspelt_key_refused'] else 'NOT refused'}")
    for finding in row["findings"]:
        print(f"  {finding}")
    return row


def check(kuberay: Path, ref: str) -> tuple[list[dict], bool]:
    rows = []
    for file, doc in documents():
        group, _, version = doc["apiVersion"].rpartition("/")
        if group != "ray.io" or doc["kind"] not in CRD_FILES:
            rows.append({"file": file, "kind": doc["kind"], "checked": False,
                         "why": f"{doc['apiVersion']} is no KubeRay kind: see `core`"})
            continue
        schema = crd_schema(kuberay, ref, doc["kind"], version)
        rows.append({**checked(file, doc, lambda d: findings(d, schema), ref), "checked": True})
    return rows, all(row["ok"] for row in rows if row["checked"])


def core_findings(doc: dict) -> list[str]:
    """What the Kubernetes client's model of a core kind refuses in `doc`."""
    from kubernetes import client
    from pydantic import ValidationError

    try:
        getattr(client, CORE_MODELS[doc["apiVersion"], doc["kind"]]).model_validate(doc)
    except ValidationError as exc:
        return [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
    return []


def check_core() -> tuple[dict, bool]:
    """The documents of core kinds, against the installed Kubernetes client's models."""
    try:
        import kubernetes
        from kubernetes import client
    except ImportError:
        raise SystemExit("the core kinds are checked with the Kubernetes Python client: pip install '.[deploy]'")
    if not hasattr(client.V1CronJob, "model_validate"):
        raise SystemExit(f"kubernetes {kubernetes.__version__}: its models are not pydantic (37 on are); "
                         "pip install '.[deploy]'")
    rows = [checked(file, doc, core_findings, f"kubernetes client {kubernetes.__version__}")
            for file, doc in documents() if (doc["apiVersion"], doc["kind"]) in CORE_MODELS]
    ok = all(row["ok"] for row in rows)
    return {"kubernetes_client": kubernetes.__version__, "ok": ok, "manifests": rows}, ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kuberay", type=Path, required=True, help="a clone of github.com/ray-project/kuberay")
    ap.add_argument("--refs", required=True, help="comma-separated tags or commits, oldest first")
    ap.add_argument("--out", type=Path, default=DEPLOY / "kuberay" / "schema-check.json")
    args = ap.parse_args()

    core, core_ok = check_core()  # first: without the client installed, before minutes of refs
    refs = []
    for ref in args.refs.split(","):
        commit = subprocess.run(["git", "-C", str(args.kuberay), "rev-parse", "--short", ref],
                                capture_output=True, text=True, check=True).stdout.strip()
        manifests, ok = check(args.kuberay, ref)
        refs.append({"ref": ref, "commit": commit, "ok": ok, "manifests": manifests})
    passing = [r["ref"] for r in refs if r["ok"]]
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "passing": passing, "refs": refs,
                                    "core": core}, indent=1) + "\n")
    print(f"no finding at: {', '.join(passing) or 'none'}; core kinds: {'no finding' if core_ok else 'FINDINGS'}")
    sys.exit(0 if refs[-1]["ok"] and core_ok else 1)


if __name__ == "__main__":
    main()
