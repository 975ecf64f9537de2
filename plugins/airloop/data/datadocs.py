"""Data Docs that render without internet.

Great Expectations 1.x writes pages that load Bootstrap, jQuery, bootstrap-table, Font Awesome and Vega from
CDNs and has no option to serve them locally; offline, the index is blank (its table is built by those
scripts). :func:`localize` rewrites each CDN reference of a built site to a copy shipped with Airloop
(``datadocs_assets/``: versions and licenses in its README and LICENSES.txt), placed once per report folder in
``_static/`` beside the batch sites, so every batch's pages work from the lake, from a file browser and
through the Airflow plugin's report route alike.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

ASSETS = Path(__file__).with_name("datadocs_assets")
STATIC = "_static"

# CDN URL (as GX's templates write it) -> file in ASSETS; a URL missing here stays as it is.
CDN_FILES = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js": (
        "bootstrap-table-filter-control.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css": (
        "bootstrap-table-filter-control.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css": (
        "bootstrap-table-filter-control.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": (
        "bootstrap-datepicker.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": (
        "bootstrap-datepicker.min.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "fontawesome.min.css",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed.min.js",
}
# Optional styling only (an 880 kB dark theme): dropped rather than shipped.
DROPPED = ("https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css",)
_LOGO = re.compile(r"https://great-expectations-web-assets\.s3\.[a-z0-9-]+\.amazonaws\.com/logo-long\.png\?d=[^\"']*")
_SRI = re.compile(r'\s+(integrity="[^"]*"|crossorigin="[^"]*")')


def install_assets(reports_dir: Path) -> Path:
    """Copy the shipped assets to ``reports_dir/_static`` (once; files already there are kept)."""
    target = reports_dir / STATIC
    for src in ASSETS.rglob("*"):
        if src.is_file():
            dst = target / src.relative_to(ASSETS)
            if not dst.exists() or dst.stat().st_size != src.stat().st_size:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
    return target


def localize(site_dir: Path) -> int:
    """Make the Data Docs site in ``site_dir`` (one batch, inside a reports folder) work offline: install the
    assets in its parent's ``_static/`` and point every page at them. Returns the number of pages rewritten."""
    site_dir = Path(site_dir)
    install_assets(site_dir.parent)
    pages = 0
    for page in site_dir.rglob("*.html"):
        depth = len(page.relative_to(site_dir).parts)  # 1 for index.html: ../_static
        up = "../" * depth
        html = page.read_text(encoding="utf-8")
        new = html
        for url, name in CDN_FILES.items():
            new = new.replace(f'"{url}"', f'"{up}{STATIC}/{name}"')
        for url in DROPPED:
            new = re.sub(rf'<link[^>]*href="{re.escape(url)}"[^>]*>', "", new)
        new = _LOGO.sub(f"{'../' * (depth - 1)}static/images/logo-long.png", new)
        new = _SRI.sub("", new)  # the integrity hashes name the CDN copies
        if new != html:
            page.write_text(new, encoding="utf-8")
            pages += 1
    return pages


def external_references(site_dir: Path) -> list[str]:
    """Scripts, styles and images a site still loads from the network (``src``/``href`` of link and script
    tags, and image sources); links a person clicks are not counted."""
    found = set()
    pattern = re.compile(r'<(?:script|link|img)\b[^>]*?(?:src|href)="(https?://[^"]+)"')
    for page in Path(site_dir).rglob("*.html"):
        found.update(pattern.findall(page.read_text(encoding="utf-8")))
    return sorted(found)
