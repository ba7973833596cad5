"""The HTML report as a person sees it: headless Chromium opens the file
offline, takes a screenshot, and the screenshot shows the plots (pixels in
the plots' line colours), not a blank page or broken images."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from testbed.cli import main as cli
from testbed.analysis.synthetic import FakeFlow, write_run

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(html_file, png, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--screenshot={png}",
         "--window-size=1200,2000", html_file.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)


@pytest.mark.skipif(BROWSER is None, reason="chromium is not installed (apt-get install chromium; "
                    "listed in tests/apt-packages.txt)")
def test_report_renders_in_headless_chromium(tmp_path):
    from PIL import Image
    base = tmp_path / "results" / "loss-sweep"
    for cc, rates in (("cubic", (95, 30, 6)), ("bbr", (95, 93, 88))):
        for loss, mbit in zip(("0%", "0.1%", "1%"), rates):
            write_run(base, f"{cc}-{loss}", workload="loss-sweep", variables={"cc": cc, "loss": loss},
                      flows=[FakeFlow("bulk", cc, mbit * 1e6, rtt_ms=105, min_rtt_ms=100)])
    report = tmp_path / "report.html"
    assert cli.main(["report", str(base), "-o", str(report)]) == 0
    png = tmp_path / "shot.png"
    proc = screenshot(report, png, tmp_path)
    assert proc.returncode == 0 and png.exists(), proc.stderr[-2000:]
    img = Image.open(png).convert("RGB")
    assert img.size == (1200, 2000)
    counts = dict((colour, n) for n, colour in img.getcolors(maxcolors=1 << 24))
    total = img.size[0] * img.size[1]
    non_white = total - counts.get((255, 255, 255), 0)
    assert non_white > 0.05 * total, f"page looks blank: {non_white} non-white pixels"
    # the two curves of the loss-sweep plot (first on the page) in matplotlib's blue and red
    blue = sum(n for (r, g, b), n in counts.items() if abs(r - 0x1f) < 30 and abs(g - 0x77) < 30
               and abs(b - 0xb4) < 30)
    red = sum(n for (r, g, b), n in counts.items() if abs(r - 0xd6) < 30 and abs(g - 0x27) < 30
              and abs(b - 0x28) < 30)
    assert blue > 500 and red > 500, f"plot lines not visible: blue {blue}, red {red} pixels"
