"""FedMKT's cross-tokenizer transfer (SPEC §8), used by `ladalit.baselines.fedmkt`.

- `token_strings`: every vocabulary id as surface text ("Ġ"/"▁" -> " ", byte-level
  symbols and "<0xNN>" byte fallback -> the bytes, "##" continuation stripped, the
  special tokens by role so that EOS maps to EOS).
- `align_tokens`: edit-distance alignment (dynamic programming over the two token
  sequences, row-vectorised with numpy) -> one-to-one pairs of positions whose strings
  are equal. A student position without such a partner gets a one-hot target on its own
  label token (as in FATE).
- `vocab_mapping`: sender id -> most similar receiver id (exact string first, else the
  smallest edit distance among the receiver tokens sharing the longest prefix); once per
  tokenizer pair, cached in memory and optionally on disk.
"""
from __future__ import annotations

import bisect
import hashlib
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

# bump when a change here changes what a cached vocabulary mapping would contain
MAPPING_VERSION = "fedmkt-vocab-1"


# ----------------------------------------------------------------------------- token strings
_BYTE_LEVEL_DECODE: dict[str, int] | None = None


def _byte_level_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes -> printable unicode table."""
    global _BYTE_LEVEL_DECODE
    if _BYTE_LEVEL_DECODE is None:
        bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
            list(range(ord("®"), ord("ÿ") + 1))
        cs = list(bs)
        n = 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        _BYTE_LEVEL_DECODE = {chr(c): b for b, c in zip(bs, cs)}
    return _BYTE_LEVEL_DECODE


def normalise_token(tok: str) -> str:
    """Surface text of one token string, tokenizer-agnostic: "Ġ"/"▁" -> space, "Ċ" -> newline,
    a leading "##" (WordPiece continuation) dropped."""
    if tok.startswith("##") and len(tok) > 2:
        tok = tok[2:]
    return tok.replace("\u0120", " ").replace("\u2581", " ").replace("\u010a", "\n").replace("\u0109", "\t")


def _bytes_text(b: bytes) -> str:
    # partial UTF-8 sequences keep a distinct, tokenizer-independent spelling
    return b.decode("utf-8", errors="backslashreplace")


def _scheme(tokenizer, raw: list[str]) -> str:
    if type(tokenizer).__name__.startswith("ByT5"):
        return "byt5"
    backend = getattr(tokenizer, "backend_tokenizer", None)
    desc = ""
    if backend is not None:
        desc = repr(backend.decoder) + repr(backend.pre_tokenizer)
    if "ByteLevel" in desc:
        return "bytelevel"
    if "WordPiece" in desc:
        return "wordpiece"
    n_g = sum(1 for t in raw if t and t[0] == "\u0120")
    n_m = sum(1 for t in raw if t and t[0] == "\u2581")
    if "Metaspace" in desc or n_m > n_g:
        return "metaspace"
    if n_g > 0:
        return "bytelevel"
    if sum(1 for t in raw if t and t.startswith("##")) > 0:
        return "wordpiece"
    return "plain"


def _surface(tok: str, scheme: str) -> str:
    if scheme == "bytelevel":
        table = _byte_level_decoder()
        if all(c in table for c in tok):
            return _bytes_text(bytes(table[c] for c in tok))
        return tok
    if scheme == "byt5":
        return f"\\x{ord(tok):02x}" if len(tok) == 1 and ord(tok) >= 128 else tok
    if scheme == "metaspace":
        if len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">"):
            try:
                return _bytes_text(bytes([int(tok[3:5], 16)]))
            except ValueError:
                pass
        return tok.replace("\u2581", " ")
    return normalise_token(tok)


SPECIAL_ROLES = ("eos", "bos", "unk", "pad")


@dataclass
class TokenTable:
    strings: list[str]           # surface text per id (special tokens: "<|role|>")
    char_len: torch.Tensor       # surface length per id, special tokens count 1
    digest: str                  # hash of `strings`: the key of vocabulary-mapping caches


_TABLES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def token_table(tokenizer) -> TokenTable:
    try:
        return _TABLES[tokenizer]
    except (KeyError, TypeError):
        pass
    n = len(tokenizer)
    raw = tokenizer.convert_ids_to_tokens(list(range(n)))
    raw = [r if isinstance(r, str) else f"<|id{i}|>" for i, r in enumerate(raw)]
    scheme = _scheme(tokenizer, raw)
    strings = [_surface(t, scheme) for t in raw]
    special = set(i for i in getattr(tokenizer, "all_special_ids", []) if 0 <= i < n)
    for role in reversed(SPECIAL_ROLES):  # eos wins where pad == eos
        i = getattr(tokenizer, f"{role}_token_id", None)
        if i is not None and 0 <= i < n:
            strings[i] = f"<|{role}|>"
            special.add(i)
    lens = torch.tensor([1 if i in special else max(len(s), 1) for i, s in enumerate(strings)], dtype=torch.long)
    table = TokenTable(strings, lens, _digest(strings))
    try:
        _TABLES[tokenizer] = table
    except TypeError:
        pass
    return table


def table_of_strings(strings: Sequence[str]) -> TokenTable:
    """Another participant's table from its token strings alone (what crosses: FedMKT's vocabularies), for
    aligning with it and mapping its ids; `char_len` (only a participant's own CE uses it) is each string's length."""
    strings = list(strings)
    lens = torch.tensor([max(len(s), 1) for s in strings], dtype=torch.long)
    return TokenTable(strings, lens, _digest(strings))


def _digest(strings: list[str]) -> str:
    return hashlib.sha256(("\x1f".join(strings)).encode("utf-8", "surrogatepass")).hexdigest()


def token_strings(tokenizer) -> list[str]:
    """Surface text of every vocabulary id of `tokenizer` (see module docstring)."""
    return token_table(tokenizer).strings


# ----------------------------------------------------------------------------- alignment
GAP, MISMATCH, SHIFTED = 1.0, 1.0, 0.25  # multiples of 1/4: the DP's sums stay exact in float64


def align_tokens(src_tokens: Sequence[str], tgt_tokens: Sequence[str], normalise: bool = True,
                 exact: bool = True) -> list[tuple[int, int]]:
    """One-to-one alignment of two tokenisations of (about) the same text, by edit distance.

    A Levenshtein DP over the token sequences: gap 1, substitution 0 for equal strings
    (SHIFTED = 0.25 when they start at different character offsets -- not counting a leading
    space that only one side has -- which breaks ties in favour of the pair at the same place
    in the text), 1 for different strings. Returns
    the substituted pairs (i, j), ascending; with `exact` only those with equal strings.
    Rows are vectorised (the in-row gap recursion is a cumulative minimum): O(n·m) numpy.
    """
    a = [normalise_token(t) for t in src_tokens] if normalise else list(src_tokens)
    b = [normalise_token(t) for t in tgt_tokens] if normalise else list(tgt_tokens)
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return []
    if a == b:
        return [(i, i) for i in range(n)]
    ids: dict[str, int] = {}
    ai = np.array([ids.setdefault(s, len(ids)) for s in a])
    bi = np.array([ids.setdefault(s, len(ids)) for s in b])
    oa = np.cumsum([0] + [len(s) for s in a])[:-1]
    ob = np.cumsum([0] + [len(s) for s in b])[:-1]
    if a[0].startswith(" ") != b[0].startswith(" "):  # a SentencePiece "dummy prefix" on one side only
        if a[0].startswith(" "):
            oa = oa - 1
        else:
            ob = ob - 1
    cost = np.where(ai[:, None] == bi[None, :], np.where(oa[:, None] == ob[None, :], 0.0, SHIFTED), MISMATCH)
    D = np.empty((n + 1, m + 1))
    D[0] = np.arange(m + 1) * GAP
    D[:, 0] = np.arange(n + 1) * GAP
    jr = np.arange(1, m + 1) * GAP
    for i in range(1, n + 1):
        cand = np.minimum(D[i - 1, :-1] + cost[i - 1], D[i - 1, 1:] + GAP)
        # D[i, j] = min(cand[j], D[i, j-1] + GAP) = j·GAP + min_{j' <= j} (base[j'] - j'·GAP)
        run = np.minimum.accumulate(np.concatenate(([D[i, 0]], cand - jr)))
        D[i, 1:] = run[1:] + jr
    pairs = []
    i, j = n, m
    while i > 0 and j > 0:
        if D[i, j] == D[i - 1, j - 1] + cost[i - 1, j - 1]:
            if not exact or ai[i - 1] == bi[j - 1]:
                pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif D[i, j] == D[i - 1, j] + GAP:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def map_vocab_strings(src: Sequence[str], tgt: Sequence[str], window: int = 8) -> torch.Tensor:
    """src id -> tgt id of the most similar string.

    Exact: one dict over the target strings (lowest id wins among duplicates), one lookup
    per source string -- O(V), about 0.1 s for 150k-token vocabularies. Fallback for the
    U unmatched strings: the candidates are the `window` target strings on each side of
    its position in the sorted target vocabulary (they share the longest prefix with it)
    plus the longest target string that is a prefix of it; the smallest edit distance
    wins, then the longer common prefix, then the lower id. O(U·(log V + 2·window·L²))
    for strings of length L: seconds for ~10^4 unmatched tokens, hence the caches.
    """
    index: dict[str, int] = {}
    for i, s in enumerate(tgt):
        index.setdefault(s, i)
    out = torch.tensor([index.get(s, -1) for s in src], dtype=torch.long)
    missing = (out < 0).nonzero().flatten().tolist()
    if not missing:
        return out
    ordered = sorted(index)
    default = index.get("<|unk|>", index.get("<|eos|>", 0))
    for i in missing:
        s = src[i]
        if not s:
            out[i] = default
            continue
        pos = bisect.bisect_left(ordered, s)
        cands = set(ordered[max(pos - window, 0): pos + window])
        for length in range(len(s) - 1, 0, -1):
            if s[:length] in index:
                cands.add(s[:length])
                break
        if not cands:
            out[i] = default
            continue
        best = min(cands, key=lambda c: (levenshtein(s, c), -_common_prefix(s, c), index[c]))
        out[i] = index[best]
    return out


_MAPPINGS: dict[tuple[str, str], torch.Tensor] = {}


def vocab_mapping(src_tokenizer, tgt_tokenizer, cache_dir: str | Path | None = None,
                  window: int = 8) -> torch.Tensor:
    """LongTensor [len(src_tokenizer)]: src id -> the most similar tgt id.

    Computed once per pair of vocabularies: cached in memory, and under `cache_dir`
    (a file named by hashes of both vocabularies' surface strings) when given.
    """
    return table_mapping(token_table(src_tokenizer), token_table(tgt_tokenizer), cache_dir, window)


def table_mapping(s: TokenTable, t: TokenTable, cache_dir: str | Path | None = None, window: int = 8) -> torch.Tensor:
    """`vocab_mapping` between two token tables (one of them may be another participant's, `table_of_strings`)."""
    key = (s.digest, t.digest)
    if key in _MAPPINGS:
        return _MAPPINGS[key]
    if s.digest == t.digest:
        mapping = torch.arange(len(s.strings))
    else:
        path = None
        if cache_dir:
            tag = hashlib.sha256(f"{MAPPING_VERSION}:{window}:{s.digest}:{t.digest}".encode()).hexdigest()[:32]
            path = Path(cache_dir).expanduser() / f"vocab-{tag}.pt"
        if path is not None and path.exists():
            mapping = torch.load(path, weights_only=True)
        else:
            mapping = map_vocab_strings(s.strings, t.strings, window)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
                torch.save(mapping, tmp)
                os.replace(tmp, path)
    _MAPPINGS[key] = mapping
    return mapping
