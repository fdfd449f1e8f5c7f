#!/usr/bin/env python3
"""Renders a kustomization directory to multi-document YAML on stdout, like `kubectl kustomize`,
for the features deploy/ uses and no others: `resources` (files and directories, recursively),
`configMapGenerator` (`name`, `files`, `options.labels`) and `patches` with a `target` (`kind`,
`name`) and an inline JSON 6902 `patch` (`add`, `replace`, `remove`). Any other key is refused
(exit 2), so a kustomization that grows a feature this does not render fails loudly instead of
being validated wrongly. Generated ConfigMaps keep their plain name (kustomize appends a content
hash); names are not checked here, only the schemas.

scripts/validate-deploy.sh uses it where kubectl is not installed (kubectl kustomize is then the
reference). Needs PyYAML (installed with kubernetes-validate).

    scripts/render-kustomize.py deploy/kubernetes-secure
"""

import os
import sys

import yaml

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "configMapGenerator", "patches"}
GENERATOR_KEYS = {"name", "files", "options"}
PATCH_KEYS = {"target", "patch"}


def die(message):
    print(f"render-kustomize: {message}", file=sys.stderr)
    sys.exit(2)


def refuse_unknown(where, found, known):
    unknown = sorted(set(found) - known)
    if unknown:
        die(f"{where}: {', '.join(unknown)} not supported by this renderer; use kubectl kustomize")


def render(directory):
    path = os.path.join(directory, "kustomization.yaml")
    with open(path, encoding="utf-8") as f:
        k = yaml.safe_load(f) or {}
    refuse_unknown(path, k, KUSTOMIZATION_KEYS)
    docs = []
    for resource in k.get("resources", []):
        target = os.path.normpath(os.path.join(directory, resource))
        if os.path.isdir(target):
            docs.extend(render(target))
        else:
            with open(target, encoding="utf-8") as f:
                docs.extend(d for d in yaml.safe_load_all(f) if d)
    for generator in k.get("configMapGenerator", []):
        refuse_unknown(f"{path} configMapGenerator", generator, GENERATOR_KEYS)
        options = generator.get("options", {})
        refuse_unknown(f"{path} configMapGenerator.options", options, {"labels"})
        data = {}
        for name in generator.get("files", []):
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                data[os.path.basename(name)] = f.read()
        metadata = {"name": generator["name"]}
        if options.get("labels"):
            metadata["labels"] = dict(options["labels"])
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data})
    for patch in k.get("patches", []):
        refuse_unknown(f"{path} patches", patch, PATCH_KEYS)
        target = patch["target"]
        refuse_unknown(f"{path} patches.target", target, {"kind", "name"})
        matched = [
            d for d in docs
            if d.get("kind") == target["kind"] and d.get("metadata", {}).get("name") == target["name"]
        ]
        if not matched:
            die(f"{path}: no {target['kind']} named {target['name']} to patch")
        for doc in matched:
            for op in yaml.safe_load(patch["patch"]):
                apply(doc, op, path)
    return docs


def apply(doc, op, where):
    """One JSON 6902 operation (RFC 6902: add, replace, remove)."""
    kind = op.get("op")
    if kind not in ("add", "replace", "remove"):
        die(f"{where}: patch op {kind!r} not supported by this renderer")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    parent = doc
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    if isinstance(parent, list):
        if kind == "add":
            parent.insert(len(parent) if last == "-" else int(last), op["value"])
        elif kind == "replace":
            parent[int(last)] = op["value"]
        else:
            del parent[int(last)]
    else:
        if kind == "add":
            parent[last] = op["value"]
        elif kind == "replace":
            if last not in parent:
                die(f"{where}: replace of missing {op['path']}")
            parent[last] = op["value"]
        else:
            del parent[last]


def main():
    if len(sys.argv) != 2:
        die("usage: render-kustomize.py DIRECTORY")
    yaml.safe_dump_all(render(sys.argv[1]), sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
