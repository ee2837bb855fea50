"""`sae-ooc serve`: its API returns exactly what `query --json` prints; bad requests (prompt, target, sizes, methods,
a bug in the query) get one-line JSON errors and the server keeps serving; no file outside the site is served (`..`,
percent-encoded, a symlink out); it binds to 127.0.0.1 unless told, warns when told, and stops on Ctrl-C; and headless
Chromium, typing into the front page's prompt box, shows the numbers of `query --json` (from disk: that the server is
needed).

The site here is made by browse's own writers (the front page, its assets and the prompt box) with a stub page per
feature: the real `browse` stage needs a harvested run, which these tests do not need.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from browser_fixtures import POLL_S, selenium_chromium
from circuit_fixtures import HOOKS, make_run

from sae_ooc.cli import main as cli_main
from sae_ooc.serve.server import MAX_PROMPT, MAX_URL, Server, make_server, url_of
from sae_ooc.browse import assets, index, live, paths
from sae_ooc.query.session import QuerySession

SECRET = "the run's secret, never served"


def make_site(run, d_sae: int = 48) -> Path:
    site = run.root / paths.SITE_DIR
    (site / paths.ASSETS).mkdir(parents=True)
    (site / paths.CSS).write_text(assets.CSS_TEXT)
    (site / paths.JS).write_text(assets.JS_TEXT)
    (site / paths.SERVE_JS).write_text(live.JS_TEXT)
    (site / "index.html").write_text(index.index_html("test site", "", HOOKS, [], "<p>hooks</p>" + live.box_html("")))
    for h in HOOKS:
        (site / h).mkdir()
        for f in range(d_sae):
            (site / paths.feature_page(h, f)).write_text(f"<!DOCTYPE html><html><body><h1>{h} feature {f}</h1></body></html>")
    (run.root / "secret.txt").write_text(SECRET)  # beside the site: must never be served
    os.symlink(run.root / "secret.txt", site / "link.txt")
    os.symlink(run.root / "data", site / "linkdir")
    return site


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    labels = {HOOKS[1]: [{"feature": f, "variable": "r1", "position": "r1", "value": "r2", "auroc": 0.97} for f in range(48)]}
    run = make_run(tmp_path_factory.mktemp("serve"), train_steps=20, labels=labels)
    make_site(run)
    return run


@pytest.fixture(scope="module")
def server(run):
    srv = make_server(run.root / paths.SITE_DIR, QuerySession(run, index=False).query)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    t.join(10)


def _request(server, path: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None):
    """(status, parsed JSON or the raw bytes) of one request, sent as written (http.client does not normalise paths)."""
    host, port = server.server_address[:2]
    c = http.client.HTTPConnection(host, port, timeout=60)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        if r.getheader("Content-Type", "").startswith("application/json"):
            return r.status, json.loads(data)
        return r.status, data
    finally:
        c.close()


def _cli_json(capsys, run, *argv) -> dict:
    assert cli_main(["query", "--run", str(run.root), "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def _alive(server, run) -> None:
    status, res = _request(server, "/api/query?prompt=" + quote("e3 r1 r2"))
    assert status == 200 and res["tokens"] == ["e3", "r1", "r2"]


@pytest.mark.parametrize("argv", [("e3 r1 r2",), ("e3 r1 r2", "--target", "e5", "--top", "4", "--examples", "1"), ("e7 r0",)])
def test_api_returns_what_query_json_prints(server, run, capsys, argv):
    params = {"prompt": argv[0], **{argv[i].lstrip("-"): argv[i + 1] for i in range(1, len(argv), 2)}}
    status, got = _request(server, "/api/query?" + "&".join(f"{k}={quote(v)}" for k, v in params.items()))
    assert status == 200
    want = _cli_json(capsys, run, *argv)
    assert got == want
    assert want["per_hook"][0]["features"] and all(it["page"] for r in want["per_hook"] for it in r["features"])


@pytest.mark.parametrize("path, status, words", [
    ("/api/query", 400, "no prompt"),
    ("/api/query?prompt=e3+e4", 400, "is not a task prompt"),
    ("/api/query?prompt=e3+r1+r2&target=r1", 400, "is a relation"),
    ("/api/query?prompt=e3+r1&target=e9999", 400, "not an entity"),
    ("/api/query?prompt=" + "e3+" * (MAX_PROMPT // 3 + 1) + "r1", 400, f"at most {MAX_PROMPT}"),
    ("/api/query?prompt=e3+r1&top=abc", 400, "top='abc'"),
    ("/api/query?prompt=e3+r1&top=0", 400, "from 1 to"),
    ("/api/query?prompt=e3+r1&prompt=e4+r1", 400, "given 2 times"),
    ("/api/query?prompt=e3+r1&evil=1", 400, "unknown parameter"),
    ("/api/query?" + "&".join(f"x{i}=1" for i in range(50)), 400, "bad query string"),
    ("/api/query?prompt=" + "e" * (MAX_URL + 10), 414, "request target over"),
    ("/api/other", 404, "no such API"),
    ("/nowhere.html", 404, ""),
    ("/assets/", 404, "not found"),  # no directory listing
])
def test_bad_requests_get_one_line_json_errors_and_the_server_goes_on(server, run, path, status, words):
    got, body = _request(server, path)
    assert got == status and isinstance(body, dict), body
    assert words in body["error"] and "\n" not in body["error"] and "Traceback" not in body["error"]
    _alive(server, run)


def test_methods_bodies_and_huge_request_lines_are_refused(server, run):
    assert _request(server, "/api/query?prompt=e3+r1", "POST", b"x" * 10)[0] == 405
    status, body = _request(server, "/api/query", "POST", b"x" * 100_000)
    assert status == 413 and "body" in body["error"]
    assert _request(server, "/api/query?prompt=e3+r1", "PUT", b"{}")[0] == 501  # the library's own refusal, as JSON
    status, body = _request(server, "/" + "a" * 70_000)  # over the library's 64 KiB request line
    assert status == 414 and isinstance(body, dict)
    status, body = _request(server, "/index.html", headers={f"X-{i}": "1" for i in range(120)})  # over its 100 headers
    assert status == 431 and isinstance(body, dict)
    _alive(server, run)


def test_a_bug_in_the_query_is_a_500_with_one_line_and_the_server_goes_on(run, capfd):
    calls = []

    def ask(prompt, target, top, examples):
        calls.append(prompt)
        if prompt == "boom":
            raise ValueError("something broke")  # a ValueError too: not to be taken for a bad query string
        return {"prompt": prompt}

    srv = make_server(run.root / paths.SITE_DIR, ask)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        status, body = _request(srv, "/api/query?prompt=boom")
        assert status == 500 and body["error"].startswith("internal error (ValueError: something broke)")
        assert _request(srv, "/api/query?prompt=fine&top=5") == (200, {"prompt": "fine"})
        assert calls == ["boom", "fine"]
    finally:
        srv.shutdown()
        srv.server_close()
    assert "Traceback" in capfd.readouterr().err  # the traceback went to the server's log


@pytest.mark.parametrize("path", ["/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E%2Fsecret.txt", "/assets/..%2f..%2fsecret.txt",
                                  "/assets/%2e%2e/%2e%2e/secret.txt", "/..%5csecret.txt", "/link.txt", "/linkdir/vocab.json",
                                  "//secret.txt", "/secret.txt%00.html"])
def test_nothing_outside_the_site_is_served(server, run, path):
    status, body = _request(server, path)
    assert status in (403, 404), (path, status)
    assert SECRET not in json.dumps(body) if isinstance(body, dict) else SECRET.encode() not in body
    _alive(server, run)


@pytest.mark.parametrize("host, status", [("evil.example:80", 403), ("127.0.0.1.evil.example", 403), ("", 403),
                                          ("localhost:1234", 200), ("[::1]:1234", 200), ("127.0.0.1", 200)])
def test_on_loopback_only_requests_for_a_loopback_host_are_answered(server, run, host, status):
    """A page whose DNS name was rebound to 127.0.0.1 sends its own name as Host: it must not read the API."""
    got, body = _request(server, "/api/query?prompt=e3+r1", headers={"Host": host})
    assert got == status, body
    if status == 403:
        assert "not this machine's loopback address" in body["error"]
    _alive(server, run)


def test_site_files_are_served(server, run):
    status, body = _request(server, "/index.html")
    assert status == 200 and body == (run.root / paths.SITE_DIR / "index.html").read_bytes()
    status, body = _request(server, "/" + paths.feature_page(HOOKS[1], 7))
    assert status == 200 and b"feature 7" in body
    assert _request(server, "/") == (200, (run.root / paths.SITE_DIR / "index.html").read_bytes())


def test_binds_to_loopback_unless_told_and_warns_when_told(run, capsys, monkeypatch):
    assert make_server(run.root / paths.SITE_DIR, lambda *a: {}).server_address[0] == "127.0.0.1"
    bound = []

    def stop_at_once(self, poll_interval=0.5):
        bound.append(self.server_address[0])
        raise KeyboardInterrupt  # what Ctrl-C raises in serve_forever

    monkeypatch.setattr(Server, "serve_forever", stop_at_once)
    assert cli_main(["serve", "--run", str(run.root), "--port", "0"]) == 0
    out, err = capsys.readouterr()
    assert bound == ["127.0.0.1"] and "warning" not in err and out.strip().endswith("serve: stopped")
    assert cli_main(["serve", "--run", str(run.root), "--port", "0", "--host", "0.0.0.0"]) == 0
    err = capsys.readouterr().err
    assert bound[-1] == "0.0.0.0" and "warning: listening on 0.0.0.0" in err


def test_refuses_a_run_without_a_site(tmp_path, run, capsys):
    other = tmp_path / "run"
    shutil.copytree(run.root, other)
    shutil.rmtree(other / paths.SITE_DIR)
    assert cli_main(["serve", "--run", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sae-ooc browse --run" in err


STUB_SESSION = """
import signal, sys, types
# a suite started in the background (`cmd &` in a non-interactive shell) runs with SIGINT ignored, which a child inherits
# and Python then keeps: give this process the Ctrl-C a terminal would
signal.signal(signal.SIGINT, signal.default_int_handler)
stub = types.ModuleType("sae_ooc.query.session")  # the real session is tested in-process above; this process tests Ctrl-C


class QuerySession:
    def __init__(self, run, index=True):
        pass

    def query(self, prompt, target=None, top=3, n_examples=3):
        return {"prompt": prompt}


stub.QuerySession = QuerySession
sys.modules["sae_ooc.query.session"] = stub
from sae_ooc.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_stops_the_server_process_cleanly(run):
    """A real `sae-ooc serve` process (with a stub query session, so as not to import torch again) stops on SIGINT:
    one line, exit 0, no traceback."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-c", STUB_SESSION, "serve", "--run", str(run.root), "--port", "0"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()  # printed once the server listens
        assert line.startswith("serve: http://127.0.0.1:"), (line, p.stderr.read() if p.poll() is not None else "")
        port = int(re.match(r"serve: http://127\.0\.0\.1:(\d+)/", line).group(1))
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.request("GET", "/api/query?prompt=e3+r1+r2")
        r = c.getresponse()
        assert (r.status, json.loads(r.read())) == (200, {"prompt": "e3 r1 r2"})
        c.close()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0 and out.strip() == "serve: stopped", (out, err)
    assert "Traceback" not in err


# the real browser ------------------------------------------------------------------------------------------------
def _ask(drv, prompt: str, target: str = "") -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    for id_, text in (("lq-prompt", prompt), ("lq-target", target)):
        box = drv.find_element(By.ID, id_)
        box.clear()
        box.send_keys(text)
    drv.find_element(By.ID, "lq-go").click()
    WebDriverWait(drv, 60, poll_frequency=POLL_S).until(lambda d: d.find_element(By.ID, "lq-out").get_attribute("data-prompt")
                                 or "lq-error" in d.find_element(By.ID, "lq-status").get_attribute("class"))


@pytest.fixture(scope="module")
def browser():
    with selenium_chromium("the prompt box", capabilities={"goog:loggingPrefs": {"browser": "ALL"}}) as drv:
        yield drv


def test_chromium_prompt_box_shows_what_query_json_says(server, run, capsys, browser):
    from selenium.webdriver.common.by import By

    drv = browser
    drv.get(url_of(server))
    for prompt, target in (("e3 r1 r2", ""), ("e7 r0", "e5")):
        _ask(drv, prompt, target)
        want = _cli_json(capsys, run, prompt, *(["--target", target] if target else []))
        assert drv.find_element(By.ID, "lq-out").get_attribute("data-prompt") == want["prompt"]
        rows = drv.find_elements(By.CSS_SELECTOR, "#lq-answers tr[data-token]")
        assert [(r.get_attribute("data-token"), r.find_elements(By.TAG_NAME, "td")[1].text) for r in rows] == \
               [(a["token"], f"{a['prob']:.3f}") for a in want["answers"]]
        assert drv.find_element(By.ID, "lq-target-line").get_attribute("data-target") == want["target"]
        for h in want["per_hook"]:  # per hook, the features that move the answer most, each linking to its page
            tr = drv.find_element(By.CSS_SELECTOR, f'#lq-hooks tr[data-hook="{h["hook"]}"]')
            links = tr.find_elements(By.CSS_SELECTOR, "a.lq-feature")
            assert [(int(a.get_attribute("data-feature")), int(a.get_attribute("data-position"))) for a in links] == \
                   [(it["feature"], it["position"]) for it in h["features"]]
            for a, it in zip(links, h["features"]):
                assert float(a.get_attribute("data-attribution")) == pytest.approx(it["attribution"], rel=1e-6)
                assert a.get_attribute("href") == url_of(server) + paths.feature_page(it["hook"], it["feature"])
        shown = [(a.get_attribute("data-hook"), int(a.get_attribute("data-position")), int(a.get_attribute("data-feature")))
                 for a in drv.find_elements(By.CSS_SELECTOR, "#lq-positions a.lq-feature")]
        assert shown == [(it["hook"], it["position"], it["feature"]) for r in want["hooks"] for it in r["by_attribution"]]
    _ask(drv, "e3 e4")  # a bad prompt: the query's own message on the page
    status = drv.find_element(By.ID, "lq-status")
    assert "is not a task prompt" in status.text and "lq-error" in status.get_attribute("class")
    errors = [e for e in drv.get_log("browser") if e["level"] == "SEVERE" and "api/query" not in e["message"]]
    assert not errors, errors
    drv.get(url_of(server) + paths.feature_page(HOOKS[1], 3))  # a feature link's target is served
    assert f"{HOOKS[1]} feature 3" in drv.find_element(By.TAG_NAME, "h1").text


def test_chromium_from_disk_the_box_says_the_server_is_needed(run, browser):
    from selenium.webdriver.common.by import By

    drv = browser
    drv.get((run.root / paths.SITE_DIR / "index.html").as_uri())
    deadline = time.time() + 30
    while drv.find_element(By.ID, "lq-prompt").is_enabled() and time.time() < deadline:
        time.sleep(0.1)
    assert drv.find_element(By.ID, "lq-status").text == live.NEEDS_SERVER
    assert not drv.find_element(By.ID, "lq-prompt").is_enabled()
