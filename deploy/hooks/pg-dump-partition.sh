#!/bin/sh
# pg-dump-partition.sh: a partkeeper `before_expire` hook. Dumps the expiring partition with
# `pg_dump -Fc` into a directory, writes its SHA-256 beside it, and checks that `pg_restore
# --list` can read the dump before exiting 0. Any failure exits non-zero, so partkeeper keeps the
# partition and fails the table's pass (the next run tries again).
#
#   before_expire = ["/usr/local/bin/pg-dump-partition.sh", "/var/backups/partitions"]
#
# The directory is the first argument, else $PARTKEEPER_DUMP_DIR. Files:
#   <dir>/<database>/<schema>.<partition>.dump         (custom format, restore with pg_restore)
#   <dir>/<database>/<schema>.<partition>.dump.sha256  (`sha256sum -c` format, run in that dir)
# A dump is written to a .partial file and renamed only once it is complete and readable, so a
# file without .partial is always whole. An existing dump of the same partition is replaced.
#
# From partkeeper's environment: DATABASE_URL, PARTKEEPER_DATABASE, PARTKEEPER_PARTITION_SCHEMA,
# PARTKEEPER_PARTITION_NAME (and PARTKEEPER_PARTITION, _TABLE, _FROM, _TO, _ACTION).
# PARTKEEPER_DUMP_URL, when set, is used instead of DATABASE_URL (e.g. a direct connection when
# partkeeper goes through a transaction pooler). PG_DUMP / PG_RESTORE name the programs (default: pg_dump, pg_restore on PATH); pg_dump must
# be of the server's major version or newer.
#
# Privileges: the role in DATABASE_URL needs SELECT on the partition (partkeeper's role owns
# it, so that is enough), USAGE on its schema; the OS user needs write access to the directory.
set -eu

die() {
	echo "pg-dump-partition: $*" >&2
	exit 1
}

dir=${1:-${PARTKEEPER_DUMP_DIR:-}}
[ -n "$dir" ] || die "no directory: pass it as the first argument or set PARTKEEPER_DUMP_DIR"
url=${PARTKEEPER_DUMP_URL:-${DATABASE_URL:-}}
[ -n "$url" ] || die "DATABASE_URL is not set (partkeeper sets it for hooks)"
schema=${PARTKEEPER_PARTITION_SCHEMA:-}
name=${PARTKEEPER_PARTITION_NAME:-}
[ -n "$schema" ] && [ -n "$name" ] || die "PARTKEEPER_PARTITION_SCHEMA and PARTKEEPER_PARTITION_NAME must be set (run me as a partkeeper hook)"
pg_dump=${PG_DUMP:-pg_dump}
pg_restore=${PG_RESTORE:-pg_restore}

# A name may hold any character; only '/' cannot be in a file name.
safe() { printf '%s' "$1" | tr '/' '_'; }
database=$(safe "${PARTKEEPER_DATABASE:-database}")
target="$dir/$database"
file="$(safe "$schema").$(safe "$name").dump"
mkdir -p "$target" || die "cannot create $target"

# pg_dump patterns: a double-quoted name is taken literally (a quote inside is doubled).
quote() { printf '"%s"' "$(printf '%s' "$1" | sed 's/"/""/g')"; }
pattern="$(quote "$schema").$(quote "$name")"

partial="$target/$file.partial"
rm -f "$partial" "$partial.sha256"
echo "pg-dump-partition: dumping $schema.$name to $target/$file"
"$pg_dump" --format=custom --no-password --dbname="$url" --table="$pattern" --file="$partial" \
	|| die "pg_dump of $schema.$name failed"
[ -s "$partial" ] || die "pg_dump wrote an empty file"
"$pg_restore" --list "$partial" >/dev/null || die "pg_restore cannot read the dump $partial"
"$pg_restore" --list "$partial" | grep -q " TABLE DATA " \
	|| die "the dump $partial holds no table data for $schema.$name"
(cd "$target" && sha256sum "$(basename "$partial")" | sed "s/\.partial\$//" >"$file.sha256.partial") \
	|| die "cannot write the checksum"
mv -f "$partial" "$target/$file"
mv -f "$target/$file.sha256.partial" "$target/$file.sha256"
(cd "$target" && sha256sum -c --quiet "$file.sha256") || die "the checksum of $target/$file does not match"
echo "pg-dump-partition: wrote $target/$file ($(wc -c <"$target/$file") bytes) and $file.sha256"
