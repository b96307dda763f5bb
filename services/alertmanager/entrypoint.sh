#!/bin/sh
# Start Alertmanager with the critical receiver's URL from the environment, under Compose and
# natively alike: copy alertmanager.yml (beside this script) to RENDERED, with the placeholder
# URL replaced by ALERTMANAGER_CRITICAL_WEBHOOK_URL when that is set, then exec the rest of the
# command line with --config.file=RENDERED.
#
#   entrypoint.sh RENDERED ALERTMANAGER [ARGS...]
#
# A webhook URL is a secret (chat and pager URLs carry their token), so the copy is private
# (umask 077) and the URL never appears on a command line. Alertmanager 0.26 and later could
# read it from a file (url_file), but Debian 12 ships 0.25.
set -eu

placeholder="'http://127.0.0.1:5001/'"
source_config="$(dirname "$0")/alertmanager.yml"
rendered="$1"
shift

umask 077
# awk's index/substr, not sub()/gsub(): those would read & and \ in the URL as special.
awk -v placeholder="$placeholder" '
    BEGIN {
        url = ENVIRON["ALERTMANAGER_CRITICAL_WEBHOOK_URL"]
        gsub(/\047/, "\047\047", url)  # a single-quoted YAML scalar doubles its quotes
        replacement = "\047" url "\047"
    }
    url != "" && (at = index($0, placeholder)) > 0 {
        $0 = substr($0, 1, at - 1) replacement substr($0, at + length(placeholder))
        replaced++
    }
    { print }
    END { if (url != "" && replaced != 1) { print "placeholder URL not found once" > "/dev/stderr"; exit 1 } }
' "$source_config" > "$rendered"

exec "$@" --config.file="$rendered"
