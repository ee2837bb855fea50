"""The feature browser (stage `browse`) on the shared tiny run: it builds, every link resolves inside the site, nothing
points at the network, a headless browser loads it without console errors, and its numbers are the SAE's on the cache;
the index keeps its state in the address, export's circuit pages link into the site once it exists, and Chromium
leaves the user's profile alone."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch
from browser_fixtures import POLL_S, selenium_chromium
from circuit_fixtures import HOOKS, mark_stages, topk_sae
from conftest import copy_run
from safetensors.torch import load_file
from sae_lens import SAE

from sae_ooc.browse.feature_record import FeatureRecord
from sae_ooc.activations.cache import heldout_mask
from sae_ooc.cli import main as cli_main
from sae_ooc.io import save_tensors, write_json
from sae_ooc.pipeline import run_stage
from sae_ooc.saes.store import METRICS_FILE, eval_rows
from sae_ooc.browse.paths import feature_page
from sae_ooc.browse.screenshot import FILE, chromium_args, chromium_env, find_chromium, screenshot, temporary_profile

SETTINGS = ["circuit.top_n=5", "circuit.curve_sizes=[0]", "circuit.edge_counts=[2]", "circuit.random_edge_sets=2", "circuit.edge_check=2",
            "circuit.mean_examples=32", "circuit.prune_pairs=2", "attribution.n_pairs=6", "attribution.only_correct=false",
            "variables.random_draws=20", "variables.bootstrap=20"]
LABELLED = (HOOKS[1], 5)


@pytest.fixture(scope="module")
def run(harvested_run, tmp_path_factory):
    """The shared tiny run (trained model + cache) with TopK SAEs saved the SAELens way, a known label, and every stage
    upstream of browse run for real on it; then `sae-ooc browse`."""
    run = copy_run(harvested_run, tmp_path_factory.mktemp("browse") / "run", SETTINGS)
    for i, h in enumerate(HOOKS):
        topk_sae(h, run.cfg.model.d_model, seed=i).save_model(run.saes_dir / h)
        labels = [{"feature": LABELLED[1], "variable": "bridge", "position": "r1", "value": "e3", "auroc": 0.91, "precision": 0.8}] if h == LABELLED[0] else []
        write_json(run.sae_eval_dir / h / METRICS_FILE, {"feature_labels": labels})
    tokens = load_file(str(run.activations_dir / "tokens.safetensors"))
    save_tensors(eval_rows(run.saes_dir), {"rows": heldout_mask(tokens, 0.2, 0).nonzero().squeeze(1)})
    mark_stages(run, ("train-sae", "eval-sae"))
    run_stage(run, "attribute", validate=False)
    for stage in ("circuit", "variable-circuit", "export"):
        run_stage(run, stage)
    assert cli_main(["browse", "--run", str(run.root)]) == 0
    return run


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []
        self.chunks: list[str] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("href", "src") and v:
                self.refs.append(v)
            if k == "data-chunks":
                self.chunks += json.loads(v)


def test_every_link_resolves_inside_the_site_and_nothing_points_at_the_network(run):
    site = run.browse_dir
    pages = sorted(site.rglob("*.html"))
    n_feature_pages = sum(1 for p in pages if re.fullmatch(r"f\d{5}\.html", p.name))
    assert n_feature_pages == 3 * 48  # every feature of every SAE
    n_links = 0
    for page in pages:
        text = page.read_text()
        p = Links()
        p.feed(text)
        for ref in p.refs:
            parts = urlsplit(ref)
            assert not parts.scheme and not parts.netloc, f"{page}: {ref}"
            if not parts.path:  # a link within the page
                continue
            target = (page.parent / unquote(parts.path)).resolve()
            assert target.is_file() and target.is_relative_to(site.resolve()), f"{page.relative_to(site)} links {ref}"
            n_links += 1
        for chunk in p.chunks:  # the index's rows, loaded by its script relative to the site's root
            assert (site / chunk).is_file(), chunk
    assert n_links >= 6 * n_feature_pages  # css, js, the two indexes, a neighbour, the JSON at least
    for f in site.rglob("*"):
        if f.is_file() and f.suffix in (".html", ".js", ".css", ".json"):
            assert not re.search(r"https?://", f.read_text()), f
    # circuit pages link their feature nodes to the feature pages, and those pages link back
    circuit = json.loads((run.circuit_dir / "circuit.json").read_text())
    node = next(n for n in circuit["nodes"] if n["type"] == "feature")
    assert f'href="../{feature_page(node["hook"], node["feature"])}"' in (site / "circuits" / "circuit.html").read_text()
    assert 'href="../circuits/circuit.html"' in (site / feature_page(node["hook"], node["feature"])).read_text()


def _cell(text: str, id_: str) -> float:
    return float(re.search(rf"id='{id_}'>([-0-9.e]+)<", text).group(1))


def test_numbers_on_a_feature_page_are_the_sae_recomputed_on_the_cache(run):
    hook, f = LABELLED
    sae = SAE.load_from_disk(run.saes_dir / hook)  # SAELens's own loader and the raw shards: no sae_ooc code in between
    manifest = json.loads((run.activations_dir / "manifest.json").read_text())
    x = torch.cat([load_file(str(run.activations_dir / hook / s["file"]))["activations"] for s in manifest["shards"][hook]]).float()
    with torch.no_grad():
        a = sae.encode(x)[:, f]
    on = a > 0
    page = (run.browse_dir / feature_page(hook, f)).read_text()
    assert on.any()
    assert _cell(page, "density") == pytest.approx(float(on.float().mean()), abs=1e-6)
    assert _cell(page, "mean") == pytest.approx(float(a[on].mean()), rel=1e-5)
    assert _cell(page, "max") == pytest.approx(float(a.max()), rel=1e-5)
    data = json.loads((run.browse_dir / hook / f"f{f:05d}.json").read_text())
    assert data["frac_nonzero"] == pytest.approx(float(on.float().mean()), abs=1e-6)
    assert data["sae_ooc"]["top_activations"][0]["activation"] == pytest.approx(float(a.max()), abs=1e-4)
    assert "bridge=e3@r1" in page  # its label from eval-sae
    top = data["sae_ooc"]["top_activations"][0]  # every token's activation of the prompt shown, the highlighted one the largest
    assert top["values"][top["position"]] == pytest.approx(top["activation"], abs=1e-4)
    hist = data["sae_ooc"]["heldout_histogram"]
    assert sum(hist["bar_heights"]) == hist["n_active"] <= hist["n_prefixes"]
    rec = FeatureRecord.from_json(data["sae_ooc"])  # the file's "sae_ooc" object is the typed record key for key
    assert rec.extra == {} and all(not ex.extra for ex in rec.top_activations) and rec.to_json() == data["sae_ooc"]
    assert "bridge=e3@r1" in rec.labels[0].text and rec.labels[0].variable == "bridge"


def test_json_uses_the_sae_dashboard_names_and_batches_hold_every_feature(run):
    batch = json.loads((run.browse_dir / HOOKS[0] / "neuronpedia" / "batch-0.json").read_text())
    assert set(batch) == {"model_id", "layer", "sae_set", "sae_id_suffix", "features"}
    assert [feat["feature_index"] for feat in batch["features"]] == list(range(48))
    feat = batch["features"][0]
    for key in ("frac_nonzero", "freq_hist_data_bar_values", "freq_hist_data_bar_heights", "logits_hist_data_bar_heights",
                "pos_str", "pos_values", "neg_str", "neg_values", "activations"):
        assert key in feat
    assert all(set(a) == {"bin_min", "bin_max", "bin_contains", "tokens", "values", "qualifying_token_index"} for a in feat["activations"])
    try:  # sae-dashboard is not a dependency; where it is installed, its own class must read the batch back unchanged
        from sae_dashboard.neuronpedia.neuronpedia_dashboard import NeuronpediaDashboardBatch
    except ImportError:
        return
    assert NeuronpediaDashboardBatch(**batch).to_dict() == batch


def _chromium(url: str, exe: str) -> subprocess.CompletedProcess:
    with temporary_profile() as profile:
        return subprocess.run(chromium_args(exe, profile) + ["--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom", url],
                              capture_output=True, text=True, timeout=120, env=chromium_env(profile))


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def test_headless_chromium_loads_the_index_and_a_feature_page_without_console_errors(run, tmp_path):
    exe = find_chromium()
    if exe is None:
        pytest.skip("Chromium is not installed (apt-get install chromium): the headless-browser check did not run")
    bad = tmp_path / "bad.html"  # the check must see a script error when there is one
    bad.write_text("<!DOCTYPE html><html><body><script>undefinedFunction();</script></body></html>")
    assert _console_errors(_chromium(bad.as_uri(), exe).stderr)
    index = _chromium((run.browse_dir / "index.html").as_uri(), exe)
    assert not _console_errors(index.stderr), index.stderr
    assert 'data-loaded="144"' in index.stdout  # the script ran and loaded every hook's rows
    assert index.stdout.count("<tr>") >= 100  # a page of the table was drawn
    page = _chromium((run.browse_dir / feature_page(*LABELLED)).as_uri(), exe)
    assert not _console_errors(page.stderr), page.stderr
    assert "bridge=e3@r1" in page.stdout


def test_command_skips_when_up_to_date_and_copies_with_out(run, tmp_path, capsys):
    out = tmp_path / "site"
    assert cli_main(["browse", "--run", str(run.root), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "browse: unchanged, skipped" in text and f"copied the site to {out}" in text
    assert (out / "index.html").is_file() and (out / feature_page(*LABELLED)).is_file()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert cli_main(["browse", "--run", str(run.root), "--out", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not an empty folder" in err
    assert (other / "notes.txt").read_text() == "mine"


def test_query_names_the_feature_pages(run):
    from sae_ooc.query.session import query

    res = query(run, "e1 r3 r1")
    items = [it for r in res.per_hook for it in r.features]
    assert items and all(Path(it.page) == run.browse_dir / feature_page(it.hook, it.feature) for it in items)


def test_export_pages_link_feature_nodes_to_the_browser_once_it_exists(run, tmp_path):
    """Issue 19: RUN/export/circuit.html's feature nodes link to RUN/browse/ pages (export runs before browse, so the page
    turns its links on only when it finds the site), and a copy away from any site links nowhere and says so."""
    page = run.export_dir / "circuit.html"
    text = page.read_text()
    refs = re.findall(r'<a data-href="([^"]+)"', text)
    circuit = json.loads((run.circuit_dir / "circuit.json").read_text())
    assert len(refs) == sum(n["type"] == "feature" for n in circuit["nodes"]) > 0  # every feature node is drawn and linked
    for ref in refs:
        target = (page.parent / ref).resolve()
        assert target.is_file() and target.is_relative_to(run.browse_dir.resolve()), ref
    exe = find_chromium()
    if exe is None:
        pytest.skip("Chromium is not installed (apt-get install chromium): the links were not followed in a browser")
    live = re.compile(r'(?<!data-)href="\.\./browse/')
    dom = _chromium(page.as_uri(), exe).stdout
    assert 'data-site="found"' in dom and len(live.findall(dom)) == len(refs)
    lone = tmp_path / "circuit.html"  # e.g. the copy in results/
    shutil.copyfile(page, lone)
    dom = _chromium(lone.as_uri(), exe).stdout
    assert 'data-site="missing"' in dom and not live.search(dom) and "no feature browser beside this page" in dom


def test_screenshot_leaves_the_users_chromium_profile_alone(run, tmp_path, monkeypatch):
    """Issue 19: Chromium ran on the user's own ~/.config/chromium and ~/.cache; it must use a temporary profile, removed."""
    if find_chromium() is None:
        pytest.skip("Chromium is not installed (apt-get install chromium): no screenshot is taken, so no profile is touched")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    made, mkdtemp = [], tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **kw: made.append(mkdtemp(*a, **kw)) or made[-1])
    site = tmp_path / "site"
    shutil.copytree(run.browse_dir, site)
    (site / FILE).unlink(missing_ok=True)
    assert screenshot(site, feature_page(*LABELLED)) == FILE
    assert (site / FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []  # no ~/.config/chromium, ~/.cache/...
    assert len(made) == 1 and not Path(made[0]).exists()  # Chromium ran on a temporary profile, removed afterwards


@pytest.fixture
def browser():
    """Headless Chromium under Selenium on a temporary profile, with the back-forward cache off: going back reloads the
    index, so what it shows comes from its address, not from a page kept in memory."""
    with selenium_chromium("the index's state", ["--disable-back-forward-cache", "--window-size=1200,900"]) as d:
        yield d


def test_the_index_keeps_sort_filters_and_page_when_coming_back_from_a_feature_page(run, browser):
    """Issue 19: sort, filters and page survive a visit to a feature page (and a saved link reopens them)."""
    d = browser
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def loaded():
        WebDriverWait(d, 60, poll_frequency=POLL_S).until(lambda d: d.find_element(By.ID, "browse-index").get_attribute("data-loaded"))

    def state():
        return (d.find_element(By.ID, "status").text, [a.text for a in d.find_elements(By.CSS_SELECTOR, "#features tbody a")],
                [th.get_attribute("class") for th in d.find_elements(By.CSS_SELECTOR, "#features th")],
                Select(d.find_element(By.ID, "f-var")).first_selected_option.get_attribute("value"))

    d.get((run.browse_dir / "index.html").as_uri())
    loaded()
    default = state()
    d.find_element(By.CSS_SELECTOR, '#features th[data-col="2"]').click()  # density, largest first
    Select(d.find_element(By.ID, "f-var")).select_by_value("-")  # features without a label: more than one page
    d.find_element(By.ID, "next").click()
    before = state()
    assert before[0].startswith("features 101–") and before[3] == "-" and "sorted" in before[2][2] and before != default
    url = d.current_url
    assert "page=2" in url and "sort=2" in url and "var=-" in url
    d.find_elements(By.CSS_SELECTOR, "#features tbody a")[0].click()
    WebDriverWait(d, 30, poll_frequency=POLL_S).until(lambda d: re.search(r"/f\d{5}\.html$", d.current_url))
    d.back()
    loaded()
    assert state() == before
    d.get("about:blank")
    d.get(url)  # the address alone brings the same rows back
    loaded()
    assert state() == before


def test_the_variable_filter_offers_the_tasks_variables_only(run):
    """A two-hop run's index filters by head, r1, r2, bridge and answer: not by a three-hop task's r3 or bridge2."""
    from sae_ooc.browse.index import index_html
    from sae_ooc.tasks.layout import load_layout

    def offered(text):
        block = re.search(r'<select id="f-var">(.*?)</select>', text).group(1)
        return re.findall(r'<option value="([^"*-][^"]*)"', block)

    assert offered((run.browse_dir / "index.html").read_text()) == ["head", "r1", "r2", "bridge", "answer"]
    layout = load_layout(run.data_dir)
    assert offered(index_html("t", "", [], [], "", variables=("head", "r1", "r2", "r3", "bridge", "bridge2", "answer"),
                              positions=layout.position_names)) == ["head", "r1", "r2", "r3", "bridge", "bridge2", "answer"]
