"""Byte-level BPE tokenizer read from an HF ``tokenizer.json``.

Two engines with one interface:

* ``tokenizers`` (the Rust package), used when it is installed;
* a small pure-Python byte-level BPE (standard library only) for the board image, which may not
  have ``tokenizers``. It supports what byte-level BPE files like the demo model's use:
  added/special tokens, a ``Split`` regex pre-tokenizer (``Isolated``) followed by ``ByteLevel``
  (``use_regex`` false), or a lone ``ByteLevel`` with GPT-2's split (needs the ``regex``
  package), the ``BPE`` model without dropout/unk/prefixes, and the ``ByteLevel`` decoder.
  Anything else is refused with an error naming the field, never approximated.

The two engines are tested to produce identical ids on the demo model's held-out text.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path


class TokenizerError(Exception):
    """tokenizer.json missing, unreadable or using a feature the pure-Python engine lacks."""


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by ByteLevel."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class PyBPE:
    """Pure-Python byte-level BPE over the parsed tokenizer.json ``spec``."""

    def __init__(self, spec: dict, path: str = "tokenizer.json"):
        def refuse(what):
            raise TokenizerError(f"{path}: {what} is not supported by the pure-Python tokenizer "
                                 "(install the 'tokenizers' package)")

        if spec.get("normalizer") is not None:
            refuse(f"normalizer {spec['normalizer'].get('type')!r}")
        model = spec.get("model") or {}
        if model.get("type") != "BPE":
            refuse(f"model type {model.get('type')!r}")
        for k in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(k):
                refuse(f"model.{k}={model[k]!r}")
        if model.get("byte_fallback"):
            refuse("model.byte_fallback")
        self.ignore_merges = bool(model.get("ignore_merges", False))
        self.vocab: dict[str, int] = dict(model["vocab"])
        merges = model.get("merges", [])
        self.ranks: dict[tuple[str, str], int] = {}
        for i, m in enumerate(merges):
            a, b = m.split(" ", 1) if isinstance(m, str) else m
            self.ranks[(a, b)] = i
        self.split_re = self._pretokenizer(spec.get("pre_tokenizer"), refuse)
        dec = spec.get("decoder")
        if dec is None or dec.get("type") != "ByteLevel":
            refuse(f"decoder {None if dec is None else dec.get('type')!r}")
        self.added = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
        self.special_ids = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
        for t in spec.get("added_tokens", []):
            if t.get("lstrip") or t.get("rstrip") or t.get("single_word") or \
                    (t.get("normalized") and spec.get("normalizer") is not None):
                refuse(f"added token options of {t['content']!r}")
        self.id_to_token = {i: s for s, i in self.vocab.items()}
        self.id_to_token.update({i: s for s, i in self.added.items()})
        self.b2u = bytes_to_unicode()
        self.u2b = {c: b for b, c in self.b2u.items()}
        self.added_re = re.compile("|".join(re.escape(s) for s in
                                            sorted(self.added, key=len, reverse=True))) \
            if self.added else None
        self._cache: dict[str, list[int]] = {}

    @staticmethod
    def _pretokenizer(pre, refuse):
        def bytelevel_ok(p):
            if p.get("add_prefix_space"):
                refuse("ByteLevel add_prefix_space")

        if pre is None:
            refuse("a missing pre_tokenizer")
        if pre.get("type") == "ByteLevel":
            bytelevel_ok(pre)
            if not pre.get("use_regex", True):
                return None
            try:
                import regex
            except ImportError:
                refuse("ByteLevel's GPT-2 regex without the 'regex' package")
            return regex.compile(GPT2_PATTERN)
        if pre.get("type") == "Sequence":
            parts = pre.get("pretokenizers", [])
            if len(parts) == 2 and parts[0].get("type") == "Split" and \
                    parts[1].get("type") == "ByteLevel" and not parts[1].get("use_regex", True):
                bytelevel_ok(parts[1])
                sp = parts[0]
                if sp.get("behavior") != "Isolated" or sp.get("invert"):
                    refuse(f"Split behavior {sp.get('behavior')!r} invert={sp.get('invert')}")
                pat = sp.get("pattern", {})
                if "Regex" in pat:
                    src = pat["Regex"]
                    if "\\p{" in src:
                        try:
                            import regex
                        except ImportError:
                            refuse("a \\p{..} split regex without the 'regex' package")
                        return regex.compile(src)
                    return re.compile(src)
                return re.compile(re.escape(pat["String"]))
        refuse(f"pre_tokenizer {json.dumps(pre)[:120]}")

    def _split(self, text: str) -> list[str]:
        if self.split_re is None:
            return [text] if text else []
        # "Isolated": every match is a piece, and so is every gap between matches.
        out, pos = [], 0
        for m in self.split_re.finditer(text):
            if m.start() > pos:
                out.append(text[pos:m.start()])
            if m.end() > m.start():
                out.append(m.group())
            pos = m.end()
        if pos < len(text):
            out.append(text[pos:])
        return out

    def _bpe(self, word: str) -> list[int]:
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        if self.ignore_merges and word in self.vocab:
            ids = [self.vocab[word]]
        else:
            sym = list(word)
            ranks = self.ranks
            while len(sym) > 1:
                best, at = None, -1
                for i in range(len(sym) - 1):
                    r = ranks.get((sym[i], sym[i + 1]))
                    if r is not None and (best is None or r < best):
                        best, at = r, i
                if best is None:
                    break
                a, b = sym[at], sym[at + 1]
                merged, i = [], 0
                while i < len(sym):
                    if i < len(sym) - 1 and sym[i] == a and sym[i + 1] == b:
                        merged.append(a + b)
                        i += 2
                    else:
                        merged.append(sym[i])
                        i += 1
                sym = merged
            try:
                ids = [self.vocab[s] for s in sym]
            except KeyError as e:
                raise TokenizerError(f"symbol {e.args[0]!r} is not in the vocabulary") from None
        if len(self._cache) < 100_000:
            self._cache[word] = ids
        return ids

    def _encode_plain(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in self._split(text):
            word = "".join(self.b2u[b] for b in piece.encode("utf-8"))
            ids += self._bpe(word)
        return ids

    def encode(self, text: str) -> list[int]:
        if self.added_re is None:
            return self._encode_plain(text)
        ids, pos = [], 0
        for m in self.added_re.finditer(text):
            ids += self._encode_plain(text[pos:m.start()])
            ids.append(self.added[m.group()])
            pos = m.end()
        return ids + self._encode_plain(text[pos:])

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        buf = bytearray()
        out: list[str] = []
        for i in ids:
            i = int(i)
            if i in self.special_ids and skip_special_tokens:
                continue
            tok = self.id_to_token.get(i)
            if tok is None:
                raise TokenizerError(f"token id {i} is outside the vocabulary")
            if i in self.added:
                out.append(buf.decode("utf-8", errors="replace"))
                buf.clear()
                out.append(tok)
            else:
                buf.extend(self.u2b[c] for c in tok)
        out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)


class Tokenizer:
    """``Tokenizer.load(path)``; ``encode(text) -> list[int]``; ``decode(ids) -> str``."""

    def __init__(self, impl, engine: str, path: Path, spec: dict):
        self._impl = impl
        self.engine = engine
        self.path = path
        added = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
        self.vocab_size = max([*spec["model"]["vocab"].values(), *added.values()]) + 1
        self.special_tokens = added

    @classmethod
    def load(cls, path, engine: str = "auto") -> Tokenizer:
        """Load ``path`` (a tokenizer.json, or a folder holding one). ``engine``: ``auto``
        (``tokenizers`` if installed, else pure Python), ``tokenizers`` or ``python``."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(f"tokenizer not found: {path} (a model needs a tokenizer.json "
                                 "beside it)")
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
            spec["model"]["vocab"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TokenizerError(f"{path}: not a valid tokenizer.json ({e})") from e
        if engine not in ("auto", "tokenizers", "python"):
            raise TokenizerError(f"unknown tokenizer engine {engine!r}")
        if engine in ("auto", "tokenizers"):
            try:
                import tokenizers
            except ImportError:
                if engine == "tokenizers":
                    raise TokenizerError("the 'tokenizers' package is not installed") from None
            else:
                try:
                    return cls(tokenizers.Tokenizer.from_file(str(path)), "tokenizers", path,
                               spec)
                except Exception as e:  # the Rust side raises plain Exception
                    raise TokenizerError(f"{path}: {e}") from e
        return cls(PyBPE(spec, str(path)), "python", path, spec)

    def encode(self, text: str) -> list[int]:
        if self.engine == "tokenizers":
            return list(self._impl.encode(text, add_special_tokens=False).ids)
        return self._impl.encode(text)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        ids = [int(i) for i in ids]
        return self._impl.decode(ids, skip_special_tokens=skip_special_tokens)  # both engines alike
