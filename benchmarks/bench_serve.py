"""`sae-ooc serve`: startup (process start to listening) and per-query time over HTTP, beside a one-off live
`sae-ooc query --json` on the same run, and the import times that a one-off query pays.

    python benchmarks/bench_serve.py [--run RUN] [--queries 20] [--starts 2]

Without --run, a run of the default config's sizes is built in a temporary folder: the default task, an untrained
model of the default shape and TopK SAEs of the default widths and k on the default hooks (random weights: the cost of
a query does not depend on what the weights are). A run without a browse site gets a minimal one (the front page with
the prompt box), which is all serve needs. The feature cache (RUN/query_cache/) is built once before timing; startup is
timed with it present, as every start after a run's first is.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def build_default_size_run(dest: Path):
    from sae_lens import TopKSAE, TopKSAEConfig

    from sae_ooc.activations.harvest import default_hooks
    from sae_ooc.config import load_config
    from sae_ooc.models.hooked import build_model, save_model
    from sae_ooc.pipeline import run_stage
    from sae_ooc.rundir import RunDir
    from sae_ooc.saes.architectures import resolved_d_sae, resolved_k
    from sae_ooc.tasks.data import load_task

    cfg = load_config(ROOT / "configs" / "default.yaml")
    run = RunDir(dest, cfg)
    run.check_and_save_config()
    run_stage(run, "data")
    _, vocab = load_task(run.data_dir)
    save_model(build_model(cfg.model, vocab, seed=0), run.model_dir)
    d = cfg.model.d_model
    for h in default_hooks(cfg.model.n_layers):
        sae = TopKSAE(TopKSAEConfig(d_in=d, d_sae=resolved_d_sae(cfg.sae, d, h), k=resolved_k(cfg.sae, h)))
        sae.cfg.metadata.hook_name = h
        sae.save_model(run.saes_dir / h)
    return run


def ensure_site(run) -> None:
    from sae_ooc.saes.store import saved_hooks
    from sae_ooc.browse import assets, index, live, paths

    site = run.root / paths.SITE_DIR
    if (site / "index.html").is_file():
        return
    (site / paths.ASSETS).mkdir(parents=True, exist_ok=True)
    (site / paths.CSS).write_text(assets.CSS_TEXT)
    (site / paths.JS).write_text(assets.JS_TEXT)
    (site / paths.SERVE_JS).write_text(live.JS_TEXT)
    (site / "index.html").write_text(index.index_html("bench", "", saved_hooks(run.saes_dir), [], live.box_html("")))


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def start_server(run_root: Path) -> tuple[subprocess.Popen, str, float]:
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "sae_ooc.cli", "serve", "--run", str(run_root), "--port", "0"], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    dt = time.perf_counter() - t0
    m = re.match(r"serve: (http://\S+/) ", line)
    if not m:
        p.kill()
        raise SystemExit(f"serve did not start: {line!r}")
    return p, m.group(1), dt


def ask(url: str, prompt: str, target: str | None = None) -> tuple[float, dict]:
    q = f"{url}api/query?prompt={quote(prompt)}" + (f"&target={quote(target)}" if target else "")
    t0 = time.perf_counter()
    with urllib.request.urlopen(q, timeout=120) as r:
        body = json.loads(r.read())
    return time.perf_counter() - t0, body


def import_time(module: str, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], env=ENV, check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=None)
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--starts", type=int, default=2)
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    from sae_ooc.rundir import RunDir
    from sae_ooc.saes.store import saved_hooks
    from sae_ooc.tasks.data import load_task
    from sae_ooc.query.session import QuerySession

    tmp = None
    if args.run is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-serve-")
        run, what = build_default_size_run(Path(tmp.name) / "run"), "default config sizes, random weights (built here)"
    else:
        run, what = RunDir.open(args.run), str(args.run)
    ensure_site(run)
    t0 = time.perf_counter()
    QuerySession(run, index=False)  # builds RUN/query_cache/features.safetensors when missing
    first = time.perf_counter() - t0
    ds, vocab = load_task(run.data_dir)
    prompts = [vocab.decode(ds["test_id"][i]["input_ids"]) for i in range(args.queries)]
    print(f"- run: {what}; hooks {', '.join(saved_hooks(run.saes_dir))}")
    print(f"- machine: {os.cpu_count()} CPUs, torch threads 1; load average before {load()}")
    print(f"- in-process QuerySession before timing (loads everything, builds the feature cache if missing): {first:.1f} s")
    starts, times = [], []
    for _ in range(args.starts):
        proc, url, dt = start_server(run.root)
        starts.append(dt)
        try:
            ask(url, prompts[0])  # the first query of a process pays torch's one-time warm-up; reported apart
            t_first = ask(url, prompts[0])[0]
            for pr in prompts:
                times.append(ask(url, pr)[0])
            times.append(ask(url, prompts[0], vocab.name(0))[0])
        finally:
            proc.send_signal(2)
            proc.wait(30)
    print(f"- serve startup (process start to listening, feature cache present): {', '.join(f'{s:.1f}' for s in starts)} s")
    print(f"- per query over HTTP ({len(times)} queries of test_id prompts, one with --target): median {statistics.median(times) * 1000:.0f} ms, "
          f"max {max(times) * 1000:.0f} ms (a repeated first prompt: {t_first * 1000:.0f} ms)")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sae_ooc.cli", "query", "--run", str(run.root), "--json", prompts[1]], env=ENV,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    print(f"- one-off live `sae-ooc query --json` (a new process): {time.perf_counter() - t0:.1f} s")
    tl, sl, tc = import_time("transformer_lens"), import_time("sae_lens"), import_time("torch")
    print(f"- imports in a fresh process, best of 2: torch {tc:.1f} s, transformer_lens {tl:.1f} s, sae_lens (imports transformer_lens) {sl:.1f} s")
    print(f"- load average after {load()}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
