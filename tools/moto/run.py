"""Runs moto server for the tests, on 127.0.0.1 only.

Usage: <repo>/.emulators/moto-venv/bin/python tools/moto/run.py [PORT]

PORT 0 (the default) picks a free port. Once listening, prints exactly one line on stdout,
``READY port=P``; moto's request log goes to stderr. Exits when its standard input reaches
end of file (when it is a pipe or a terminal), so a test process that dies for whatever reason takes its server with it (a
harness keeps stdin as a pipe), and on SIGTERM or SIGINT.

This is what ``moto_server -H 127.0.0.1 -p PORT`` does, plus the READY line (no race for a
free port) and the stdin watch (no orphaned servers).
"""

import os
import signal
import stat
import sys
import threading

from werkzeug.serving import make_server

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)


def _exit_at_eof() -> None:
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(0)


def _stdin_is_watchable() -> bool:
    """A pipe or a terminal: EOF there means the parent is gone (or the user typed ^D).
    Standard input from /dev/null or a file would end at once, so it is not watched."""
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or os.isatty(0)


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        "127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler
    )
    # moto builds some URLs from MOTO_PORT; set it to the port actually bound.
    os.environ["MOTO_PORT"] = str(server.port)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: os._exit(0))
    if _stdin_is_watchable():
        threading.Thread(target=_exit_at_eof, name="stdin-watch", daemon=True).start()
    print(f"READY port={server.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
