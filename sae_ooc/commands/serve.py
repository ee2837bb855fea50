"""Serve the feature browser with a live prompt box: sae-ooc serve --run RUN [--port N].

One process loads the run's model, SAEs and feature statistics once, then serves RUN/browse/ (written by `sae-ooc
browse`) and GET /api/query?prompt=...&target=..., which returns what `sae-ooc query --json` prints. The browser's
front page gets a prompt box: type a prompt, see the model's answers and, per hook and position, the features that move
the answer most, each linking to its page. Listens on 127.0.0.1 only unless --host says otherwise. Ctrl-C stops it.
It answers from the run as it was at startup (model, SAEs, eval-sae's labels): restart it after rerunning a stage.
"""

import sys

from sae_ooc.commands import bounded

COMMON = {"force": False, "overrides": False, "config": False}  # like query: it reads the run as it is
DEFAULT_PORT = 8765


def add_arguments(p) -> None:
    p.add_argument("--port", type=bounded(int, 0, 65535), default=DEFAULT_PORT, help="TCP port (0: any free port, printed at start)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; anything but a loopback address lets other machines query the model and read the site")


def main(run, args) -> int:
    from sae_ooc.errors import UserError
    from sae_ooc.serve.server import is_loopback, make_server, url_of
    from sae_ooc.browse.paths import SERVE_JS, SITE_DIR

    site = run.root / SITE_DIR
    if not (site / "index.html").is_file():
        raise UserError(f"no feature browser in {site}; run `sae-ooc browse --run {run.root}` first (serve shows that site)")
    if not is_loopback(args.host):
        print(f"serve: warning: listening on {args.host}: anyone who can reach this machine on port {args.port} can query the "
              "model and read the run's site; there is no login", file=sys.stderr)
    try:
        print(f"serve: loading the model, SAEs and feature statistics of {run.root} once", file=sys.stderr, flush=True)
        from sae_ooc.query.session import QuerySession

        session = QuerySession(run, index=False)  # the prompt index is for `query` without a server; serve does not need it
        server = make_server(site, session.query, args.host, args.port)
    except KeyboardInterrupt:
        print("serve: stopped", file=sys.stderr)
        return 130
    if not (site / SERVE_JS).is_file():
        print(f"serve: this site was built before the prompt box; `sae-ooc browse --run {run.root} --force` adds it "
              "(the API answers meanwhile)", file=sys.stderr)
    print(f"serve: {url_of(server)} (the feature browser with a prompt box; API: {url_of(server)}api/query?prompt=...); "
          "Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print("serve: stopped", flush=True)
    return 0
