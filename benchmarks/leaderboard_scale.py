"""How the leaderboard scales: build time of a board with N models, and sorting time in Chromium.

    .venv/bin/python benchmarks/leaderboard_scale.py [--models 300] [--browser] [--repeats 5]

Targets (issue 4): a 300-model board builds (aggregation + CSVs + every page and plot) in under
10 s, and its page sorts in under 200 ms as measured in the browser (performance.now() around
the click handler, including the layout the new order causes). Exits with status 1 when a
target is missed.
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

BUILD_TARGET_S = 10.0
SORT_TARGET_MS = 200.0


def measure_build(n: int, out: Path) -> dict[str, float]:
    from leaderboard.aggregate import aggregate
    from leaderboard.site import build_site
    from leaderboard.synthetic import synthetic_board

    cards, records = synthetic_board(n)
    t0 = time.perf_counter()
    aggregation = aggregate(cards, records)
    t1 = time.perf_counter()
    report = build_site(aggregation, out)
    t2 = time.perf_counter()
    return {"aggregate_s": t1 - t0, "site_s": t2 - t1, "total_s": t2 - t0, "pages": len(report.pages)}


def measure_sort(site: Path, repeats: int) -> list[float]:
    from leaderboard._browser import start_chromium

    with tempfile.TemporaryDirectory() as profile:
        driver = start_chromium(profile)
        try:
            driver.get((site / "boards" / "digits_Linf.html").as_uri())
            timings = []
            for i in range(repeats):
                for column in ("clean_accuracy", "model_id", "rank"):
                    driver.find_element("css selector", f'#board th[data-column="{column}"] button').click()
                    timings.append(float(driver.find_element("id", "board").get_attribute("data-sort-ms")))
            return timings
        finally:
            driver.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=300)
    parser.add_argument("--browser", action="store_true", help="also measure sorting in headless Chromium")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of three header clicks")
    args = parser.parse_args()

    t0 = time.perf_counter()
    importlib.import_module("leaderboard.site")  # imports torch through benchmark.*
    print(f"import: {time.perf_counter() - t0:.2f} s (not counted)")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        figures = measure_build(args.models, site)
        print(f"{args.models} models: aggregate {figures['aggregate_s']:.3f} s, site {figures['site_s']:.3f} s, "
              f"total {figures['total_s']:.3f} s for {figures['pages']:.0f} pages (target < {BUILD_TARGET_S:.0f} s)")
        ok &= figures["total_s"] < BUILD_TARGET_S
        if args.browser:
            timings = measure_sort(site, args.repeats)
            print(f"sort {args.models} rows in Chromium: median {statistics.median(timings):.1f} ms, "
                  f"max {max(timings):.1f} ms over {len(timings)} clicks (target < {SORT_TARGET_MS:.0f} ms)")
            ok &= max(timings) < SORT_TARGET_MS
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
