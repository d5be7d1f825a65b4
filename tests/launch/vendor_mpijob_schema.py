#!/usr/bin/env python3
# vendor_mpijob_schema.py: writes tests/launch/mpijob_v2beta1_schema.json, the openAPIV3Schema of
# the MPIJob v2beta1 CustomResourceDefinition (kubeflow/mpi-operator, the CRD that
# deploy/v2beta1/mpi-operator.yaml installs; manifests/base/kubeflow.org_mpijobs.yaml holds the
# same), with the descriptions left out (they do not validate anything) and where it came from.
#   vendor_mpijob_schema.py CRD_YAML COMMIT [OUT_JSON]
import json
import os
import sys

import yaml


def strip_descriptions(node):
    if isinstance(node, dict):
        # A property *named* "description" is a dict; only the documentation strings go.
        return {k: strip_descriptions(v) for k, v in node.items() if not (k == "description" and isinstance(v, str))}
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def main():
    crd_path, commit = sys.argv[1], sys.argv[2]
    out = sys.argv[3] if len(sys.argv) > 3 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "mpijob_v2beta1_schema.json")
    crds = [d for d in yaml.safe_load_all(open(crd_path)) if d and d.get("kind") == "CustomResourceDefinition"
            and d["metadata"]["name"] == "mpijobs.kubeflow.org"]
    if len(crds) != 1:
        sys.exit(f"{crd_path}: expected one CustomResourceDefinition mpijobs.kubeflow.org, found {len(crds)}")
    versions = {v["name"]: v for v in crds[0]["spec"]["versions"]}
    schema = strip_descriptions(versions["v2beta1"]["schema"]["openAPIV3Schema"])
    vendored = {
        "$comment": ("openAPIV3Schema of CustomResourceDefinition mpijobs.kubeflow.org, version v2beta1, from "
                     f"github.com/kubeflow/mpi-operator at commit {commit} (\"Prepare v0.8.2\"), file "
                     "manifests/base/kubeflow.org_mpijobs.yaml (deploy/v2beta1/mpi-operator.yaml installs the same CRD); "
                     "descriptions removed. Regenerate with tests/launch/vendor_mpijob_schema.py."),
        "x-source": {"repository": "github.com/kubeflow/mpi-operator", "commit": commit,
                     "path": "manifests/base/kubeflow.org_mpijobs.yaml", "version": "v2beta1"},
    }
    vendored.update(schema)
    with open(out, "w") as f:
        json.dump(vendored, f, indent=1, sort_keys=False)
        f.write("\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
