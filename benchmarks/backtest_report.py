"""The backtest report for Online Retail, as the README shows it: the command, its time, the
page's numbers and its screenshot.

    python benchmarks/backtest_report.py [--data PATH] [--as-of 2011-09-09]

Runs ``crm-scorer backtest FILE --preset online-retail --as-of T --report report.html`` (the
command a user runs), opens the page in headless Chromium and saves the screenshot to
docs/backtest-report-online-retail.png, and writes the command, its seconds and the page's
numbers to benchmarks/results/backtest-report.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "online_retail" / "online_retail.csv.gz"
RESULTS = ROOT / "benchmarks" / "results" / "backtest-report.json"
SCREENSHOT = ROOT / "docs" / "backtest-report-online-retail.png"
CLI = str(Path(sys.executable).with_name("crm-scorer"))
#: The browser window: the page's width, and tall enough for its last section.
WINDOW = "1280,3600"


def screenshot(page: Path, png: Path) -> None:
    browser = shutil.which("chromium")
    if browser is None:
        raise SystemExit("no chromium on the PATH (Debian: apt-get install chromium)")
    png.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--window-size={WINDOW}", f"--screenshot={png}", page.as_uri()],
        capture_output=True, timeout=300, check=True,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--as-of", default="2011-09-09")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "report.html"
        scores = Path(folder) / "scores.csv"
        command = [CLI, "backtest", str(args.data), "--preset", "online-retail", "--as-of",
                   args.as_of, "--out", str(scores), "--report", str(page)]  # fmt: skip
        started = time.perf_counter()
        run = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if run.returncode != 0:
            raise SystemExit(f"the backtest failed:\n{run.stderr}")
        print(run.stdout)
        html = page.read_text()
        found = re.search(r'id="report-numbers">(.*?)</script>', html)
        assert found is not None
        numbers = json.loads(found.group(1))
        screenshot(page, SCREENSHOT)
        page_bytes = len(html.encode())
    backtest = re.search(r"in ([0-9.]+)s\n", run.stdout)
    document = {
        "command": f"crm-scorer backtest {args.data.name} --preset online-retail --as-of "
        f"{args.as_of} --report report.html",
        "seconds": round(seconds, 1),
        "backtest_seconds": float(backtest.group(1)) if backtest else None,
        "page_bytes": page_bytes,
        "screenshot": str(SCREENSHOT.relative_to(ROOT)),
        "screenshot_bytes": SCREENSHOT.stat().st_size,
        "numbers": numbers,
        "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()},
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    shot = document["screenshot_bytes"]
    print(f"{seconds:.1f} s in all; the page {page_bytes:,} bytes, the screenshot {shot:,} "
          f"bytes; wrote {args.out.relative_to(ROOT)}")  # fmt: skip


if __name__ == "__main__":
    main()
