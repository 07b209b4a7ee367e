"""Open the report in a real headless browser (Debian's chromium).

No browser driver is needed: the test writes a copy of the report with a small
checking script injected at the top of <head>. The script records console.error
calls, uncaught errors and failed resource loads, and on load measures every <img>;
it writes a JSON summary into <pre id="alexbench-check">, which ``--dump-dom``
prints. Chromium's own console log (``--enable-logging=stderr``) is checked too.
A screenshot of the unmodified report is saved in the test's tmp dir, and also to
$ALEXBENCH_SCREENSHOT when that is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support.fakeruns import make_fake_run

from alexbench.report import write_report


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "/usr/bin/chromium"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not found; .ci/run installs it")

CHECK_SCRIPT = """<script>
(function () {
  var problems = [];
  var original = console.error;
  console.error = function () {
    problems.push("console.error: " + Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && t.tagName) {
      problems.push("failed to load " + t.tagName + " " + String(t.src || t.href || "").slice(0, 80));
    } else {
      problems.push("uncaught: " + e.message);
    }
  }, true);
  window.addEventListener("unhandledrejection", function (e) { problems.push("unhandled rejection: " + e.reason); });
  window.addEventListener("load", function () {
    var images = Array.prototype.slice.call(document.images);
    var bad = [];
    images.forEach(function (img, i) {
      var box = img.getBoundingClientRect();
      // checkVisibility() is false inside a closed <details> or under display: none
      var visible = typeof img.checkVisibility !== "function" || img.checkVisibility();
      if (!img.complete || img.naturalWidth === 0 || img.naturalHeight === 0 || box.width === 0 || box.height === 0 ||
          !visible) {
        bad.push({index: i, alt: img.alt, naturalWidth: img.naturalWidth, width: box.width, height: box.height,
                  visible: visible});
      }
    });
    var out = document.createElement("pre");
    out.id = "alexbench-check";
    out.textContent = JSON.stringify({images: images.length, bad: bad, problems: problems,
                                      height: document.documentElement.scrollHeight,
                                      title: document.title});
    document.body.appendChild(out);
  });
})();
</script>"""


def _chromium_cmd(profile: Path, *extra: str) -> list[str]:
    assert CHROMIUM is not None
    return [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", f"--user-data-dir={profile}", *extra]


def _run(cmd: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(home)}  # keep chromium's caches and crash dumps out of the real home
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("browser")
    runs = [
        make_fake_run(base / "runs" / "torch", framework="torch", accuracy=0.74, epochs=6),
        make_fake_run(base / "runs" / "keras", framework="keras", accuracy=0.71, epochs=6, seconds_per_epoch=22),
        make_fake_run(base / "runs" / "pre", model="alexnet", pretrained="imagenet", accuracy=0.86, epochs=3,
                      seconds_per_epoch=80),
        make_fake_run(base / "runs" / "vgg", model="vgg16", framework="keras", pretrained="imagenet", epochs=4,
                      epochs_done=2, accuracy=0.88, seconds_per_epoch=120),
    ]
    skipped = [{"entry": "alexnet/keras/imagenet/s0", "model": "alexnet", "framework": "keras",
                "pretrained": "imagenet", "reason": "ImageNet weights for the Keras port not found offline"}]
    html, _ = write_report(runs, base / "report.html", title="AlexNet challenge: PyTorch vs Keras on CIFAR-10",
                           skipped=skipped)
    return html


def test_report_loads_without_errors_and_every_image_renders(report: Path, tmp_path: Path) -> None:
    html = report.read_text(encoding="utf-8")
    n_img = len(re.findall(r"<img\b", html))
    assert n_img >= 12
    checked = tmp_path / "checked.html"
    checked.write_text(html.replace("<head>", "<head>\n" + CHECK_SCRIPT, 1), encoding="utf-8")

    proc = _run(_chromium_cmd(tmp_path / "profile", "--enable-logging=stderr", "--v=0",
                              "--window-size=1280,900", "--virtual-time-budget=10000", "--dump-dom",
                              checked.as_uri()), tmp_path / "home")
    m = re.search(r'<pre id="alexbench-check">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"chromium printed no check result (rc {proc.returncode}): {proc.stderr[-2000:]}"
    result = json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                        .replace("&amp;", "&"))
    assert result["problems"] == [], result["problems"]
    assert result["images"] == n_img
    assert result["bad"] == [], "images that did not render: " + json.dumps(result["bad"])
    assert result["title"] == "AlexNet challenge: PyTorch vs Keras on CIFAR-10"
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line and checked.name in line]
    assert console == [], "\n".join(console)


def test_report_screenshot(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    proc = _run(_chromium_cmd(tmp_path / "profile", "--window-size=1280,3000", f"--screenshot={shot}",
                              report.as_uri()), tmp_path / "home")
    assert shot.is_file(), f"no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # a real page, not a blank one
    target = os.environ.get("ALEXBENCH_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
