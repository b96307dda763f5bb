"""Serve one of the ceiling apps exactly as `python -m app` serves the API (uvloop, httptools,
one worker, no access log), so the only difference measured is the application.

    python -m bench.apps.serve bench.apps.hello:app 127.0.0.1 8000
"""

import sys

import uvicorn


def main(argv: list[str]) -> None:
    target, host, port = argv
    uvicorn.run(
        target,
        host=host,
        port=int(port),
        workers=1,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
        proxy_headers=True,
        forwarded_allow_ips="*",
        timeout_keep_alive=75,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
