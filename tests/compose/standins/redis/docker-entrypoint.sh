#!/bin/sh
# TEST STAND-IN for the redis image's entrypoint: the part of its contract docker-compose.yml
# relies on (see the Dockerfile next to this file).
set -eu

if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi

if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

# Files Redis writes (dumps, AOF) readable by nobody else, as upstream.
if [ "$(umask)" = 0022 ]; then
    umask 0077
fi

exec "$@"
