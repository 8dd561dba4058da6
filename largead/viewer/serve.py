"""``largead view --serve``: serve one written page on ``http://127.0.0.1:<port>/`` (the page itself needs no server;
this is for browsers or set-ups that restrict ``file://``, and for viewing from another machine through an SSH
tunnel). Only that one file is served; every other path is a 404."""

from __future__ import annotations

import http.server
import os
import sys
import webbrowser
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit


def make_server(page: str | os.PathLike, host: str = "127.0.0.1", port: int = 0
                ) -> tuple[http.server.ThreadingHTTPServer, str]:
    """A server (not yet running) for ``page`` and the page's URL. ``port=0`` picks a free port.

    ``/`` and ``/<file name>`` answer the page (read once, now); anything else is 404.
    """
    path = Path(page)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such page to serve")
    body = path.read_bytes()
    name = path.name

    class PageHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            route = unquote(urlsplit(self.path).path)
            if route not in ("/", f"/{name}"):
                self.send_error(404, "only the viewer page is served here")
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature of the base class
            pass  # quiet: the command prints the URL and nothing else

    server = http.server.ThreadingHTTPServer((host, int(port)), PageHandler)
    url = f"http://{host}:{server.server_address[1]}/{quote(name)}"
    return server, url


def serve(page: str | os.PathLike, host: str = "127.0.0.1", port: int = 0, open_browser: bool = False,
          log: Callable[[str], None] = print) -> None:
    """Serve ``page`` until interrupted (Ctrl-C); print its URL first (flushed, also into a pipe) and open it in a
    browser if asked."""
    server, url = make_server(page, host, port)
    with server:
        log(f"serving {page} at {url}  (Ctrl-C to stop)")
        sys.stdout.flush()
        if open_browser:
            webbrowser.open(url)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


__all__ = ["make_server", "serve"]
