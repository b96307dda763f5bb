#!/bin/sh
# The monitoring plane's basic-auth files, from MONITORING_PASSWORD in the environment: run by the
# one-shot `monitoring-auth` service under Compose and by the native runner on every `up` alike.
#
#   render.sh WEB_CONFIG PASSWORD_FILE
#
# WEB_CONFIG    the --web.config.file of Prometheus, Alertmanager and the Pushgateway: the user
#               `monitoring` with a bcrypt hash of the password (the only hash they accept).
# PASSWORD_FILE the password itself, for Prometheus's own requests (`password_file`: its scrapes
#               of itself, Alertmanager and the Pushgateway, and its alerts to Alertmanager).
#
# The hash is derived here at every start, never committed, and a changed password takes effect
# at the next start. The password reaches htpasswd on its standard input (-i), never on a command
# line, and nothing here prints either file. Each file is written beside itself and renamed into
# place: the servers re-read the web config on every request and never see half of one.
# MONITORING_AUTH_OWNER (uid:gid), when set, is who the files are handed to (Compose: nobody,
# which Prometheus, Alertmanager and the Pushgateway run as); they are readable by that owner only.
set -eu

user=monitoring
# bcrypt's cost: 2^10 rounds. Measured on the project's 2-core machine: hashing 0.07 s of CPU,
# a server's first check of the password 0.15 s, later requests 1 ms (they cache a verified one).
cost=10
web_config=$1
password_file=$2
password=${MONITORING_PASSWORD:-}

if ! command -v htpasswd >/dev/null; then
    echo "render.sh: htpasswd not found (Debian: apt-get install apache2-utils)" >&2
    exit 1
fi
if [ -z "$password" ]; then
    echo "render.sh: MONITORING_PASSWORD is empty (make up generates one into .env)" >&2
    exit 1
fi
# bcrypt reads at most 72 bytes; a longer password would be checked by its first 72 only.
if [ "$(printf '%s' "$password" | wc -c)" -gt 72 ]; then
    echo "render.sh: MONITORING_PASSWORD is longer than bcrypt's 72 bytes" >&2
    exit 1
fi
case "$password" in
    *"
"*)
        echo "render.sh: MONITORING_PASSWORD holds a line break" >&2
        exit 1
        ;;
esac

umask 077
# printf is a shell builtin: the password is on no process's command line.
line="$(printf '%s\n' "$password" | htpasswd -niB -C "$cost" "$user")"
hash="${line#"$user":}"
case "$hash" in
    '$2'?'$'*) ;;
    *)
        echo "render.sh: htpasswd did not produce a bcrypt hash" >&2
        exit 1
        ;;
esac

printf '# Rendered by services/monitoring-auth/render.sh; regenerated at every start.\nbasic_auth_users:\n  %s: '"'"'%s'"'"'\n' \
    "$user" "$hash" > "$web_config.tmp"
printf '%s' "$password" > "$password_file.tmp"
if [ -n "${MONITORING_AUTH_OWNER:-}" ]; then
    chown "$MONITORING_AUTH_OWNER" "$web_config.tmp" "$password_file.tmp"
fi
mv -f "$web_config.tmp" "$web_config"
mv -f "$password_file.tmp" "$password_file"
