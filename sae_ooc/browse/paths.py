"""Where things lie in the browse site (relative to its root). Torch-free: `sae-ooc query` links to the pages."""

from __future__ import annotations

from pathlib import Path

SITE_DIR = "browse"  # RUN/browse/
MARKER = "browse.json"  # what the site was built from; also tells a site folder from any other folder
ASSETS = "assets"
CSS = f"{ASSETS}/browse.css"
JS = f"{ASSETS}/browse.js"
SERVE_JS = f"{ASSETS}/serve.js"  # the front page's prompt box (live.py), which asks `sae-ooc serve`
CIRCUITS = "circuits"


def hook_dir(hook: str) -> str:
    return hook  # hook names are TransformerLens names: letters, digits, dots and underscores


def feature_page(hook: str, feature: int) -> str:
    """The page of one feature, relative to the site's root: '<hook>/f00012.html'."""
    return f"{hook_dir(hook)}/f{int(feature):05d}.html"


def feature_json(hook: str, feature: int) -> str:
    return f"{hook_dir(hook)}/f{int(feature):05d}.json"


def site_page(run_root: str | Path, hook: str, feature: int) -> Path | None:
    """RUN/browse/<hook>/f<feature>.html when `sae-ooc browse` has written it, else None."""
    p = Path(run_root) / SITE_DIR / feature_page(hook, feature)
    return p if p.is_file() else None


def site_links(nodes: list[dict], site: str) -> dict[str, str]:
    """{node id: its feature page} for a circuit's feature nodes, `site` being the feature browser's root seen from the page."""
    return {n["id"]: site + feature_page(n["hook"], n["feature"]) for n in nodes
            if n.get("type") == "feature" and isinstance(n.get("feature"), int) and n.get("hook")}
