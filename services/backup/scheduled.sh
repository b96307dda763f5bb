#!/bin/sh
# Scheduled backups under Compose (the `backup` service, profile `backup`): every
# BACKUP_INTERVAL_SECONDS a `pg_dump` custom-format archive of the application database into
# /backups (BACKUP_DIR on the host), keeping the BACKUP_KEEP newest. The files are those of
# `make backup` (stack/backup/archive.py), so `make restore FILE=...` takes either: the name
# app-<UTC time>.dump, beside it <name>.sha256 in sha256sum's format, written through a hidden
# partial file so an interrupted dump never looks complete. PG* variables name the server.
set -eu
umask 077

interval="${BACKUP_INTERVAL_SECONDS:-86400}"
keep="${BACKUP_KEEP:-14}"
dir=/backups
# The healthcheck reads this: "ok" after a backup that worked, "failed" after one that did not.
status=/tmp/backup-status

case "$keep" in '' | *[!0-9]* | 0) echo "backup: BACKUP_KEEP must be at least 1, got $keep" >&2; exit 2 ;; esac
case "$interval" in '' | *[!0-9]* | 0) echo "backup: BACKUP_INTERVAL_SECONDS must be a positive number" >&2; exit 2 ;; esac
# A stop (SIGTERM, forwarded by init) ends the wait between two backups at once; during one, the
# shell runs the trap only between commands, so the backup in progress is finished first.
stopping=""
trap 'stopping=1' TERM INT

backup() {
    name="app-$(date -u +%Y%m%dT%H%M%SZ).dump"
    partial="$dir/.$name.partial"
    if ! pg_dump --format=custom --file="$partial"; then
        rm -f "$partial"
        return 1
    fi
    sum="$(sha256sum <"$partial" | cut -d' ' -f1)"
    printf '%s  %s\n' "$sum" "$name" >"$dir/$name.sha256"
    mv "$partial" "$dir/$name"
    echo "backup: $dir/$name ($(wc -c <"$dir/$name") bytes)"
}

prune() {
    # Names sort by time; everything but the newest $keep goes, with its checksum.
    ls -1 "$dir" | grep -E '^app-[0-9]{8}T[0-9]{6}Z\.dump$' | sort >/tmp/backups
    excess=$(($(wc -l </tmp/backups) - keep))
    if [ "$excess" -gt 0 ]; then
        head -n "$excess" /tmp/backups | while read -r old; do
            rm -f "$dir/$old" "$dir/$old.sha256"
            echo "backup: removed $old (BACKUP_KEEP=$keep)"
        done
    fi
}

while [ -z "$stopping" ]; do
    if backup; then
        prune
        echo ok >"$status"
    else
        echo "backup: pg_dump failed; the next try is in $interval s" >&2
        echo failed >"$status"
    fi
    [ -z "$stopping" ] || break
    sleep "$interval" &
    # Returns early (above 128) when the trap ran.
    wait $! || kill $! 2>/dev/null || true
done
