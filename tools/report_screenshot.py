"""Screenshot a study's ``report.html`` with the system's headless Chromium (for docs/img/report.png).

Shoots a copy of the page in which ``--hide`` (CSS selectors) is hidden, so the settings, the
result table, the forest plot and the heatmap grid fit one tall window; scales the shot to
``--width`` and stores it as a small palette PNG. Uses Debian's ``chromium`` (``apt-get install
chromium``) through its ``--screenshot`` switch; nothing is downloaded.

    python tools/report_screenshot.py runs/compare/demo/report.html docs/img/report.png
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

HIDE = "figure.small, #per-class, #per-class + div, #per-class + p, #curves, #curves + figure, #curves + p"


def shoot(browser: str, url: str, out: Path, size: tuple[int, int]) -> Image.Image:
    cmd = [
        browser,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--window-size={size[0]},{size[1]}",
        f"--screenshot={out}",
        url,
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    with Image.open(out) as im:
        return im.convert("RGB")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", type=Path, help="report.html")
    p.add_argument("out", type=Path, help="PNG to write")
    p.add_argument("--hide", default=HIDE, help="CSS selectors hidden in the shot")
    p.add_argument("--window", default="1280x2000", help="browser window WxH (the shot's size)")
    p.add_argument("--width", type=int, default=960, help="width of the PNG written")
    p.add_argument("--colors", type=int, default=128, help="palette size (smaller file)")
    args = p.parse_args(argv)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("chromium not found: apt-get install chromium", file=sys.stderr)
        return 1
    w, h = (int(v) for v in args.window.split("x"))
    html = args.report.read_text(encoding="utf-8")
    if args.hide:
        html = html.replace("</head>", f"<style>{args.hide}{{display:none!important}}</style></head>", 1)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"  # self-contained: it renders the same anywhere
        page.write_text(html, encoding="utf-8")
        sheet = shoot(browser, page.as_uri(), Path(tmp) / "shot.png", (w, h))
    if sheet.width > args.width:
        sheet = sheet.resize(
            (args.width, round(sheet.height * args.width / sheet.width)), Image.Resampling.LANCZOS
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(args.colors, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"{args.out}: {sheet.width}x{sheet.height}, {args.out.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
