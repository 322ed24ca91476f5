"""A picture of a model card for the README: the page as headless Chromium draws it, 1200 pixels wide.

    python -m ml.tools.card_picture <model_card.html> docs/img/model_card.png

`python -m ml registry card MODEL --out card.html` gives the card of a registry version. Chromium is Debian's
(`/usr/bin/chromium`, or TIDEMARK_CHROMIUM), driven by Playwright; the page is opened offline, as a file.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

from ml.core.errors import TidemarkError

CHROMIUM = "/usr/bin/chromium"  # TIDEMARK_CHROMIUM names another
WIDTH = 1200
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


class NoBrowser(TidemarkError, RuntimeError):
    """Chromium is not installed where the picture expects it; the message says how to install it."""


def main(html_path: str | Path, png_path: str | Path) -> Path:
    """Screenshot the whole card at `html_path`, WIDTH pixels wide, into the PNG `png_path`; that path."""
    from playwright.sync_api import sync_playwright

    chromium = Path(os.environ.get("TIDEMARK_CHROMIUM", CHROMIUM))
    if not chromium.exists():
        raise NoBrowser(f"no Chromium at {chromium}: install Debian's (`sudo apt-get install chromium`) or set "
                        "TIDEMARK_CHROMIUM to a Chromium binary")
    source, target = Path(html_path).resolve(), Path(png_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 900})
            page.goto(source.as_uri(), wait_until="load")
            shot = page.screenshot(full_page=True)
        finally:
            browser.close()
    _save_small(shot, target)
    return target


def _save_small(png: bytes, target: Path) -> None:
    """The screenshot with a palette of 128 colours: the card is flat colour and text, so it reads the same at
    about a third of the bytes."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        flat = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        flat.save(target, optimize=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m ml.tools.card_picture <model_card.html> <picture.png>")
    print(main(sys.argv[1], sys.argv[2]))
