"""The float32 torch k-means that picked ladalit's prototypes until FAISS took over (issue 35):
kept out of the product as a reference, for row 4 of the benchmarks ("today's torch path",
beside FAISS and scikit-learn) and for the tests, which check FAISS's Lloyd iterations
against its Lloyd iterations from the same seeds.

k-means++ seeding, Lloyd iterations in chunked matrix products, and one last pass that
finds each centroid's nearest samples, on the embeddings' device.
"""

from __future__ import annotations

import numpy as np
import torch

from ladalit.method.prototypes import distinct_nearest, num_prototypes

__all__ = ["kmeans_pp_init", "kmeans", "assign", "select_prototypes"]

CHUNK_ELEMS = 1 << 23  # a distance block [rows, c] holds at most this many floats (32 MiB)


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def kmeans_pp_init(x: torch.Tensor, c: int, seed: int, max_points: int | None = None) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) in float32, deterministic for ``seed``.

    Returns ``c`` rows of ``x`` (``[c, d]``, a copy) chosen one at a time with
    probability proportional to the squared distance to the nearest centre chosen
    so far. Each step is one matrix-vector product over the candidates (memory
    bound), so with ``max_points`` the candidates are a seeded uniform subsample of
    ``max(max_points, 2c)`` rows: at 100k x 384 and c = 1000 seeding over every row
    reads 150 MB 1000 times (~14 s on one core), over 8192 rows ~1 s.
    """
    g = _generator(seed, x.device)
    n = x.shape[0]
    if max_points is not None and n > max(max_points, 2 * c):
        x = x[torch.randperm(n, generator=g, device=x.device)[: max(max_points, 2 * c)]]
        n = x.shape[0]
    sq = (x * x).sum(1)

    def sqdist(i: int) -> torch.Tensor:
        return torch.addmv(sq + sq[i], x, x[i], alpha=-2.0).clamp_(min=0.0)

    chosen = [int(torch.randint(n, (1,), generator=g, device=x.device))]
    d2 = sqdist(chosen[0])
    d2[chosen[0]] = 0.0
    for _ in range(1, c):
        cum = torch.cumsum(d2, 0)
        if float(cum[-1]) > 0:  # D^2 sampling: the first index whose running sum exceeds u * total
            u = torch.rand(1, generator=g, device=x.device) * cum[-1]
            nxt = min(int(torch.searchsorted(cum, u, right=True)), n - 1)
            if float(d2[nxt]) <= 0:  # u rounded onto the total: the farthest point instead
                nxt = int(d2.argmax())
        else:  # every remaining point coincides with a centre: any free one
            free = torch.ones(n, dtype=torch.bool, device=x.device)
            free[chosen] = False
            free = free.nonzero().squeeze(1)
            nxt = int(free[torch.randint(len(free), (1,), generator=g, device=x.device)])
        chosen.append(nxt)
        d2 = torch.minimum(d2, sqdist(nxt))
        d2[nxt] = 0.0  # exact zero despite the expanded-norm rounding (earlier centres stay 0)
    return x[chosen].clone()


def _blocks(n: int, c: int):
    step = max(1, CHUNK_ELEMS // max(c, 1))
    return ((s, min(n, s + step)) for s in range(0, n, step))


def assign(x: torch.Tensor, sq: torch.Tensor, centroids: torch.Tensor):
    """Nearest centroid of every row of ``x`` and the total squared distance (inertia)."""
    cs = (centroids * centroids).sum(1)
    labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    inertia = 0.0
    for s, e in _blocks(x.shape[0], centroids.shape[0]):
        d = torch.addmm(cs, x[s:e], centroids.T, alpha=-2.0)
        m, labels[s:e] = d.min(1)
        inertia += float((m + sq[s:e]).clamp_(min=0.0).sum())
    return labels, inertia


def kmeans(x: torch.Tensor, c: int, seed: int, niter: int = 20, tol: float = 1e-3,
           seed_points: int | None = None) -> tuple[torch.Tensor, float, int]:
    """Lloyd's k-means from a k-means++ seeding; returns ``(centroids, inertia, iterations)``.

    Stops after ``niter`` updates, or earlier when an update lowers the inertia by
    less than ``tol`` (relative). The inertia returned is that of the centroids
    returned. A centroid that loses every point keeps its position.
    ``seed_points`` bounds the k-means++ candidates (:func:`kmeans_pp_init`).
    """
    sq = (x * x).sum(1)
    centroids = kmeans_pp_init(x, c, seed, seed_points)
    labels, inertia = assign(x, sq, centroids)
    it = 0
    while it < niter:
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=c)
        new = torch.where((counts > 0)[:, None], sums / counts.clamp(min=1)[:, None].to(x.dtype), centroids)
        new_labels, new_inertia = assign(x, sq, new)
        it += 1
        improved = inertia - new_inertia
        centroids, labels, inertia = new, new_labels, new_inertia
        if improved <= tol * inertia:
            break
    return centroids, inertia, it


def _nearest(x: torch.Tensor, sq: torch.Tensor, centroids: torch.Tensor, k: int):
    """The ``k`` nearest rows of ``x`` to each centroid: ``(d2 [c, k], index [c, k])``, ascending."""
    cs = (centroids * centroids).sum(1)
    best_d = best_i = None
    for s, e in _blocks(x.shape[0], centroids.shape[0]):
        d = torch.addmm(cs[:, None] + sq[None, s:e], centroids, x[s:e].T, alpha=-2.0)  # [c, rows], contiguous
        dd, ii = d.topk(min(k, e - s), dim=1, largest=False)
        ii += s
        if best_d is not None:
            dd, ii = torch.cat([best_d, dd], 1), torch.cat([best_i, ii], 1)
            dd, j = dd.topk(min(k, dd.shape[1]), dim=1, largest=False)  # ties keep the earlier row
            ii = ii.gather(1, j)
        best_d, best_i = dd, ii
    return best_d, best_i


def select_prototypes(
    embeddings: np.ndarray | torch.Tensor,
    init_fraction: float,
    seed: int,
    niter: int = 20,
    tol: float = 1e-3,
    seed_points: int = 8192,
) -> list[int]:
    """Indices of ``c = ceil(init_fraction * n)`` distinct prototype samples.

    1. :func:`kmeans` on the float32 embeddings (centred first, which changes no
       distance and keeps the expanded ``|x|^2 - 2x.c + |c|^2`` form accurate):
       k-means++ seeding over at most ``seed_points`` candidates, then at most
       ``niter`` Lloyd updates, stopping early below a ``tol`` relative gain.
    2. Greedy matching: for each centroid in order, take its nearest sample not
       taken yet (its 16 nearest are found in one pass over the samples; a centroid
       whose 16 are all taken scans every sample).

    Returns ``c`` distinct indices (ints, in centroid order); all indices when
    ``c >= n``; ``[]`` when ``c == 0``. Deterministic for a given ``seed`` (and device).
    """
    if isinstance(embeddings, torch.Tensor):
        x = embeddings.detach().to(torch.float32)
    else:
        x = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"embeddings must be [n, d], got shape {tuple(x.shape)}")
    n = x.shape[0]
    c = num_prototypes(n, init_fraction)
    if c == 0:
        return []
    if c >= n:
        return list(range(n))

    x = (x - x.mean(0)).contiguous()
    centroids, _, _ = kmeans(x, c, seed, niter=niter, tol=tol, seed_points=seed_points)
    sq = (x * x).sum(1)
    _, nbrs = _nearest(x, sq, centroids, min(n, 16))

    # the library's matching step: only the k-means backend is what this module compares
    return distinct_nearest(x.cpu().numpy(), centroids.cpu().numpy(), nbrs.cpu().numpy())
