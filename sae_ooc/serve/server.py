"""The HTTP side of `sae-ooc serve`: the standard library's ThreadingHTTPServer and SimpleHTTPRequestHandler (request
parsing, content types, HEAD, caching headers are theirs), with what a server of local files must add.

- `GET /api/query?prompt=...&target=...&top=...&examples=...`: exactly what `sae-ooc query --json` prints for the same
  options (the same `QuerySession.query`); a prompt or target the query refuses is a 400 with its one-line message as
  `{"error": ...}`, anything unexpected a 500 with a one-line message (the traceback goes to the server's log only).
  Queries run one at a time (one model, one lock); the static files are served in parallel.
- Static files only from inside the site folder: a `..` segment (written or percent-encoded) is refused, and a path
  whose real location (symlinks followed) lies outside the folder is not found; no directory listings.
- On a loopback address (the default), only requests whose Host header names it (127.0.0.1, localhost, ::1): a page
  elsewhere whose DNS name is rebound to 127.0.0.1 cannot read the site or the API through the user's browser.
- Caps: the prompt (MAX_PROMPT characters), the request target (MAX_URL), a request body (none is read: anything
  above MAX_BODY bytes is refused), the query string's fields. Every error, the library's own included, is a small
  JSON body, never an HTML page or a traceback; the server keeps serving after any of them.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from sae_ooc.errors import UserError
from sae_ooc.records import Record

API = "/api/query"
MAX_PROMPT = 500  # characters: a task prompt is a few tokens, a natural one a sentence
MAX_URL = 4096  # bytes of the request target (the library itself refuses request lines over 64 KiB)
MAX_BODY = 1024  # bytes: the API takes no body
MAX_TOP = 20  # answers and features per hook (and per position) listed
MAX_EXAMPLES = 10  # = commands.query.MAX_EXAMPLES: top-activating prompts cached per feature
PARAMS = ("prompt", "target", "top", "examples")
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}

Ask = Callable[[str, "str | None", int, int], "Record | dict"]  # (prompt, target, top, examples) -> a QueryResult (or its JSON)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class QueryApi:
    """Turns the API's query string into a call of `ask` (one at a time) and its answer into (HTTP status, JSON body)."""

    def __init__(self, ask: Ask):
        self.ask = ask
        self.lock = threading.Lock()

    def answer(self, query_string: str) -> tuple[int, dict]:
        try:
            params = parse_qs(query_string, keep_blank_values=True, max_num_fields=len(PARAMS) + 2)
        except ValueError as e:  # too many fields
            return 400, {"error": f"bad query string ({e}); use {API}?prompt=...&target=..."}
        try:
            args = self._args(params)
            with self.lock:
                res = self.ask(*args)
            return 200, res.to_json() if isinstance(res, Record) else res  # a QueryResult: the JSON `query --json` prints
        except UserError as e:  # a prompt or target the query refuses, or a bad parameter
            return 400, {"error": str(e)}
        except Exception as e:  # a bug: the client gets one line, the log the traceback, and the server goes on
            traceback.print_exc(file=sys.stderr)
            return 500, {"error": f"internal error ({type(e).__name__}: {e}); the server's log has the traceback"}

    @staticmethod
    def _args(params: dict[str, list[str]]) -> tuple:
        unknown = sorted(set(params) - set(PARAMS))
        if unknown:
            raise UserError(f"unknown parameter(s) {', '.join(unknown)}; {API} takes {', '.join(PARAMS)}")
        for k, v in params.items():
            if len(v) > 1:
                raise UserError(f"parameter {k} given {len(v)} times; give it once")
        prompt = params.get("prompt", [""])[0]
        if not prompt.strip():
            raise UserError(f"no prompt: ask {API}?prompt=e12+r3+r7 (an entity then one or two relations; text for a natural task)")
        if len(prompt) > MAX_PROMPT:
            raise UserError(f"the prompt has {len(prompt)} characters; at most {MAX_PROMPT}")
        target = params.get("target", [""])[0].strip() or None
        return prompt, target, _int(params, "top", 3, 1, MAX_TOP), _int(params, "examples", 3, 0, MAX_EXAMPLES)


def _int(params: dict, name: str, default: int, lo: int, hi: int) -> int:
    text = params.get(name, [""])[0].strip()
    if not text:
        return default
    try:
        v = int(text)
    except ValueError:
        v = None
    if v is None or not lo <= v <= hi:
        raise UserError(f"{name}={text[:20]!r}: give a whole number from {lo} to {hi}")
    return v


class Handler(SimpleHTTPRequestHandler):
    server_version = "sae-ooc-serve"
    sys_version = ""  # no Python version in the Server header

    def __init__(self, *args, site: str, api: QueryApi, **kwargs):
        self.site, self.api = site, api
        super().__init__(*args, directory=site, **kwargs)

    # every error is JSON: the library's own (400 bad request line, 414, 431, 501) go through here too
    def send_error(self, code, message=None, explain=None):
        try:
            short = HTTPStatus(code).phrase
        except ValueError:
            short = "Error"
        self.log_error("code %d, message %s", code, message or short)
        body = json.dumps({"error": message or short}).encode()
        self.send_response(code, short)  # the status line gets the standard phrase only, never request text
        self.send_header("Connection", "close")
        self.close_connection = True
        if code >= 200 and code not in (HTTPStatus.NO_CONTENT, HTTPStatus.RESET_CONTENT, HTTPStatus.NOT_MODIFIED):
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (HTTPStatus.NO_CONTENT, HTTPStatus.RESET_CONTENT, HTTPStatus.NOT_MODIFIED):
            self.wfile.write(body)

    def send_json(self, code: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_request(self, code="-", size="-"):  # quiet on success; errors are still logged (log_error)
        pass

    def _refused(self) -> bool:
        """Requests that are refused whatever they ask for: too long a target, a body, and (on a loopback address) a
        Host header naming another machine: a web page whose name was rebound to 127.0.0.1 must not read the API."""
        if self.server.loopback:
            host = (self.headers.get("Host") or "").strip().lower()
            name = host[1:].split("]")[0] if host.startswith("[") else host.rsplit(":", 1)[0]
            if name not in LOOPBACK_NAMES:
                self.send_error(HTTPStatus.FORBIDDEN, f"Host {host[:60]!r} is not this machine's loopback address; open {url_of(self.server)}")
                return True
        if len(self.path) > MAX_URL:
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG, f"request target over {MAX_URL} bytes; the prompt may have at most {MAX_PROMPT} characters")
            return True
        length = self.headers.get("Content-Length")
        if length is not None and (not length.strip().isdigit() or int(length) > MAX_BODY):
            self.send_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {MAX_BODY} bytes; the API takes none")
            return True
        return False

    def do_GET(self):
        self._get(head=False)

    def do_HEAD(self):
        self._get(head=True)

    def do_POST(self):
        if not self._refused():
            self.send_error(HTTPStatus.METHOD_NOT_ALLOWED, f"only GET and HEAD: ask {API}?prompt=...")

    def _get(self, head: bool) -> None:
        if self._refused():
            return
        url = urlsplit(self.path)
        if url.path == API:
            if head:
                self.send_error(HTTPStatus.METHOD_NOT_ALLOWED, f"use GET {API}?prompt=...")
            else:
                self.send_json(*self.api.answer(url.query))
            return
        if url.path.startswith("/api/"):
            self.send_error(HTTPStatus.NOT_FOUND, f"no such API; there is {API}?prompt=...&target=...")
            return
        parts = unquote(url.path).replace("\\", "/").split("/")
        if ".." in parts or "\x00" in url.path or "%00" in url.path:
            self.send_error(HTTPStatus.FORBIDDEN, "paths outside the site are not served")
            return
        real = os.path.realpath(self.translate_path(self.path))
        if url.path == "/favicon.ico" and not os.path.isfile(real):  # browsers ask for it; the site has none
            self.send_response(HTTPStatus.NO_CONTENT)
            self.end_headers()
            return
        if os.path.commonpath([real, self.site]) != self.site:  # a symlink that leads out of the site
            self.send_error(HTTPStatus.NOT_FOUND, "not found")
            return
        super().do_HEAD() if head else super().do_GET()

    def list_directory(self, path):  # no listings: the site's pages link to everything it has
        self.send_error(HTTPStatus.NOT_FOUND, "not found")
        return None


class Server(ThreadingHTTPServer):
    daemon_threads = True  # a slow client never holds up Ctrl-C
    loopback = True  # set by make_server


class Server6(Server):
    address_family = socket.AF_INET6


def make_server(site: str | Path, ask: Ask, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A server (not yet serving) of the files in `site` and of the API answered by `ask`; port 0: any free port."""
    root = os.path.realpath(site)
    handler = partial(Handler, site=root, api=QueryApi(ask))
    cls = Server6 if ":" in host else Server
    try:
        server = cls((host, port), handler)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port (0: any free one)") from None
    server.loopback = is_loopback(host)
    return server


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
