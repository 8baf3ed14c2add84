"""The review page in a real headless browser: it loads without console messages, its script runs,
the cards come in confidence order (and by name on request), and a screenshot shows the thumbnails.

Needs Chromium (Debian: ``apt-get install chromium``; or set ``ICM_CHROMIUM`` to a Chrome/Chromium
binary). Skipped with the reason where none is installed, unless ``ICM_REQUIRE_BROWSER=1`` (CI sets
it after installing one), where a missing browser fails.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from icm_cli.cli import app
from icm_cli.review import thumbs
from tests.review_fixtures import ODD_NAMES, standard_out

runner = CliRunner()


def _browser() -> str | None:
    explicit = os.environ.get("ICM_CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


BROWSER = _browser()
if BROWSER is None and os.environ.get("ICM_REQUIRE_BROWSER") != "1":
    pytest.skip("no headless browser: apt-get install chromium (or set ICM_CHROMIUM) to check the review page",
                allow_module_level=True)


def _chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    assert BROWSER is not None, "ICM_REQUIRE_BROWSER=1 but no Chromium found (apt-get install chromium)"
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           "--hide-scrollbars", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=4000", "--window-size=1280,900", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, errors="replace")


def _console(stderr: str) -> list[str]:
    """Lines the page wrote to the console (log, warnings, errors, uncaught exceptions)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def _cards(dom: str) -> list[dict]:
    out = []
    for attrs in re.findall(r"<article ([^>]*)>", dom):
        out.append({k: html.unescape(v) for k, v in re.findall(r'(data-[a-z]+|class)="([^"]*)"', attrs)})
    return out


@pytest.fixture
def page(tmp_path):
    out, confs = standard_out(tmp_path)
    res = runner.invoke(app, ["review", str(out)])
    assert res.exit_code == 0, res.output
    return out / "review.html", confs


def test_page_loads_without_console_messages_and_lists_cards_in_confidence_order(page, tmp_path):
    path, confs = page
    done = _chromium(tmp_path, path.as_uri(), "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert _console(done.stderr) == []
    dom = done.stdout
    assert 'data-ready="1"' in dom  # the script ran to its end
    cards = _cards(dom)
    assert len(cards) == len(confs) + 1  # every result, the failed one included
    assert cards[0]["data-status"] == "failed"
    scored = [float(c["data-conf"]) for c in cards if c["data-conf"]]
    assert scored == sorted(scored) and len(scored) == len(confs) - 1
    assert cards[-1]["data-conf"] == ""  # no confidence: after every scored result
    assert ODD_NAMES[0] in [c["data-name"] for c in cards]
    assert "8 of 8 shown" in dom


def test_the_view_in_the_address_sorts_by_name_and_filters(page, tmp_path):
    path, confs = page
    done = _chromium(tmp_path, path.as_uri() + "#sort=name&below=0.5", "--dump-dom")
    assert _console(done.stderr) == []
    cards = _cards(done.stdout)
    visible = [c for c in cards if "hidden" not in c["class"].split()]
    assert sorted(float(c["data-conf"]) for c in visible) == [0.12, 0.35]
    names = [c["data-name"] for c in cards]
    assert names.index("frame2") < names.index("frame10")  # natural order
    assert "2 of 8 shown" in done.stdout


def test_screenshot_shows_the_thumbnails(page, tmp_path):
    path, _ = page
    shot = tmp_path / "shot.png"
    done = _chromium(tmp_path, path.as_uri(), f"--screenshot={shot}")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.int32)
    assert pixels.std() > 20  # not a blank page
    # The object of every test source is yellow (230, 200, 40); in the thumbnails it lies under the pink fill.
    fill = (1 - thumbs.FILL_OPACITY) * np.array([230, 200, 40]) + thumbs.FILL_OPACITY * thumbs.FILL
    near = np.abs(pixels - fill).sum(axis=2) < 40
    assert near.sum() > 500, "no mask overlay visible: thumbnails did not load"
