"""What a user sees first: the HTML report's landing page, rendered by headless Chromium.

Builds `snakemake --report` in a finished study's directory and screenshots its first screen, so
that the claims' verdicts can be checked by eye (they are RST tables on the landing page, after
the study's question). Needs Debian's `chromium`; prints where the PNG is.

    python benchmarks/report_screenshot.py --workdir . --out report_landing.png [--configfile config/x.yaml]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("."), help="a study directory whose report stage has run")
    parser.add_argument("--configfile", default=None, help="the study file the run used (default: config/config.yaml)")
    parser.add_argument("--out", type=Path, default=Path("report_landing.png"))
    parser.add_argument("--size", default="1400,1000", help="the browser window, px (the first screen)")
    args = parser.parse_args(argv)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("report_screenshot: no chromium on PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    html = (args.workdir / "report.html").resolve()
    extra = ["--configfile", args.configfile] if args.configfile else []
    subprocess.run(["snakemake", *extra, "--report", str(html)], cwd=args.workdir, check=True, capture_output=True)
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={args.size}",
                    "--virtual-time-budget=10000", f"--screenshot={args.out.resolve()}", html.as_uri()],
                   check=True, capture_output=True, timeout=300)
    print(f"report_screenshot: {args.out.resolve()} (from {html})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
