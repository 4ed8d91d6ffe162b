"""How fast the studio shows a model: the time from asking for 32 new seeds to all 32 thumbnails
decoded in a real browser (Debian's chromium), the server's share of it, and the same while a
refine runs in the background. Optionally a screenshot of the page for the README.

    python bench/studio.py --model demo/runs/00000-demo [--screenshot docs/studio.png]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 1.0  # issue 23: 32 thumbnails of the demo model in under a second on a CPU
TAB = {"X-Studio-Tab": "bench-tab-0001", "Content-Type": "application/json"}


def start(model: str, extra=()) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "generate.py"), "studio", "--model", model, "--port", "0",
                             "--vgg-weights", "random", *extra], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        sys.exit(f"error: the studio did not start: {line.strip()}")
    return proc, "http://" + line.split("http://", 1)[1].split("/", 1)[0] + "/"


def post(url: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers=TAB)
    return json.loads(urllib.request.urlopen(req, timeout=120).read())


def page_time(pg, first: int) -> float:
    """Seconds from clicking Show for seeds first..first+31 to all 32 images decoded."""
    pg.fill("#seed-start", str(first))
    t = time.perf_counter()
    pg.click("#seed-show")
    pg.wait_for_function(f"""() => {{ const ims = Array.from(document.querySelectorAll('#thumbs img'));
        return ims.length === 32 && ims[0].src.includes('/{first}.png') && ims.every(i => i.complete && i.naturalWidth); }}""",
                         polling=5)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--screenshot", default=None, help="also save a screenshot of the page here")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    proc, url = start(args.model)
    rows = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            pg = browser.new_page(viewport={"width": 1360, "height": 860})
            pg.goto(url)
            pg.wait_for_function("() => document.querySelectorAll('#thumbs img').length === 32")
            server, idle, busy = [], [], []
            for i in range(args.repeats):  # fresh seeds each time: nothing comes from the cache
                t = time.perf_counter()
                post(url, "api/render", {"seeds": f"{10_000 + 32 * i}-{10_000 + 32 * i + 31}"})
                server.append(time.perf_counter() - t)
                idle.append(page_time(pg, 20_000 + 32 * i))
            # The same while a refine (VGG19 at 256 px, Adam) runs in this studio's background.
            style = ROOT / "docs" / "clipart.png"
            if style.exists():
                up = urllib.request.Request(url + "api/upload?name=style.png", data=style.read_bytes(),
                                            headers={"X-Studio-Tab": TAB["X-Studio-Tab"]})
                uid = json.loads(urllib.request.urlopen(up, timeout=60).read())["id"]
                job = post(url, "api/refine", {"content": {"seed": 1}, "styles": [{"upload": uid}], "steps": 2000})
                time.sleep(1.0)
                for i in range(args.repeats):
                    busy.append(page_time(pg, 30_000 + 32 * i))
                post(url, f"api/job/{job['id']}/cancel", {})
            if args.screenshot:
                pg.fill("#seed-start", "0")
                pg.click("#seed-show")
                pg.wait_for_function("() => Array.from(document.querySelectorAll('#thumbs img')).every(i => i.complete)")
                pg.click('#thumbs figure[data-seed="5"]')
                pg.wait_for_timeout(500)
                pg.screenshot(path=args.screenshot)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    rows.append(("server: render 32 new seeds", statistics.median(server)))
    rows.append(("browser: 32 new thumbnails shown", statistics.median(idle)))
    if busy:
        rows.append(("browser: the same while a refine runs", statistics.median(busy)))
    print(f"model {args.model}; median of {args.repeats}; target: 32 thumbnails in under {TARGET_S:g} s")
    print(f"{'what':<40} {'seconds':>8} {'x target':>9}")
    for name, sec in rows:
        print(f"{name:<40} {sec:>8.3f} {sec / TARGET_S:>9.2f}")
    print(json.dumps({"model": args.model, **{name: round(sec, 4) for name, sec in rows}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
