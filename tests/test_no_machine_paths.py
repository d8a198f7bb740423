"""No committed text file holds an absolute path of one machine (a checkout, a home or temp
folder): such a path leaks from tool output into docs, cards or artefacts and is wrong anywhere
else. Tools print and store paths as given, relative, or by name (host/run_cli.py display_path,
quant/readers.py meta.source)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# An absolute path starting at one of these folders; not when the slash continues a word, a
# URL host or a relative path (example.com/home/..., ./tmp/, ~/work/ are fine).
FOLDERS = ("work", "root", "home", "tmp", "Users")
MACHINE_PATH = re.compile(r"(?<![\w.~\-/])/(?:" + "|".join(FOLDERS) + ")/")


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (or git is missing)")
    return [ROOT / p for p in out.decode("utf-8", "surrogateescape").split("\0") if p]


def machine_paths(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line holding an absolute machine path."""
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1)
            if MACHINE_PATH.search(line)]


def test_pattern():
    work, root, home, tmp, _ = FOLDERS          # not spelled out: this file is scanned too
    hits = [f"/{d}/x" for d in FOLDERS] + [f"cd /{work}/main && make", f"(/{home}/u/a.txt)",
                                           f"'/{tmp}/x'", f"path=/{root}/y"]
    misses = ["https://example.com/home/x", "./tmp/x", "~/work/x", "build/tmp/x",
              "a/work/b", "/usr/lib/x", "/workspace/x", "/home", "//tmp/x"]
    assert all(MACHINE_PATH.search(s) for s in hits), [s for s in hits
                                                       if not MACHINE_PATH.search(s)]
    assert not any(MACHINE_PATH.search(s) for s in misses), [s for s in misses
                                                             if MACHINE_PATH.search(s)]


def test_no_tracked_file_holds_a_machine_path():
    bad = []
    for f in tracked_files():
        if not f.is_file():                    # deleted in the work tree, not yet committed
            continue
        data = f.read_bytes()
        if b"\0" in data[:8192]:               # binary (weight files, .npy, safetensors)
            continue
        text = data.decode("utf-8", "replace")
        bad += [f"{f.relative_to(ROOT)}:{i}: {line[:120]}" for i, line in machine_paths(text)]
    assert not bad, "absolute machine paths in tracked files:\n" + "\n".join(bad)
