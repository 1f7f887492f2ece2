"""Round-1 prototypes (paper ❷, SPEC §3.3): FAISS k-means over the public-set
embeddings, then the nearest *distinct* real sample to each centroid.

One k-means engine, FAISS (`faiss-cpu` by default; on a GPU node the `gpu` extra's
`faiss-gpu`, used when torch sees CUDA and FAISS sees a GPU):

1. k-means++ seeding (FAISS's ``ClusteringInitialization``, D² sampling) over a
   seeded subsample of at most ``seed_points`` rows: every k-means++ step reads all
   its candidates once, so over all 100k x 384 rows and k = 1000 the seeding alone
   costs ~12 s on one core, over 8192 rows ~0.5 s;
2. Lloyd iterations in ``faiss.Kmeans`` on *every* row (``max_points_per_centroid``
   set to n, so FAISS does not subsample and solve a smaller problem), from those
   seeds, stopping when an iteration changes the objective by at most ``tol``
   (``early_stop_threshold``) or after ``niter``;
3. the 16 nearest samples of each centroid in one exhaustive FAISS search, then a
   greedy matching that gives each centroid its nearest sample not taken yet.

Threads: FAISS's OpenMP pool (and the OpenBLAS bundled in the PyPI wheels, an OpenMP
build that follows that pool unless ``OPENBLAS_NUM_THREADS`` pinned it at load) is set
to torch's thread count for the call and restored after it.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

__all__ = ["num_prototypes", "faiss_gpu_available", "kmeans", "select_prototypes"]

NEIGHBOURS = 16  # nearest samples found per centroid in one search, for the greedy matching


def _faiss():
    try:
        import faiss
    except ImportError as err:  # a declared dependency; a broken install says what to do
        raise ImportError("ladalit's prototypes need FAISS: pip install 'faiss-cpu>=1.14' "
                          "(or, on a GPU node, the extra: pip install 'ladalit[gpu]')") from err
    return faiss


def num_prototypes(n: int, init_fraction: float) -> int:
    """``ceil(init_fraction * n)`` clipped to ``[0, n]``.

    The product is rounded to 9 decimals before the ceiling so that float noise
    does not add a centroid (``0.1 * 30 = 3.0000000000000004`` → 3, not 4).
    """
    if not init_fraction >= 0.0:  # also rejects NaN
        raise ValueError(f"init_fraction must be >= 0, got {init_fraction}")
    return min(n, math.ceil(round(init_fraction * n, 9)))


def faiss_gpu_available() -> bool:
    """True when torch sees CUDA and the installed FAISS is a GPU build that sees a GPU
    (under faiss-cpu, ``faiss.Kmeans(gpu=True)`` silently runs on the CPU: this says False)."""
    if not torch.cuda.is_available():
        return False
    faiss = _faiss()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@contextlib.contextmanager
def _threads(n: int):
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, n))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _flat_index(d: int, gpu: bool):
    """An exact L2 index, on the current CUDA device when ``gpu``."""
    faiss = _faiss()
    index = faiss.IndexFlatL2(d)
    if gpu:
        res = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(res, torch.cuda.current_device(), index)
        index.ladalit_resources = res  # the resources must outlive the index
    return index


def _seed_centroids(x: np.ndarray, c: int, seed: int, seed_points: int | None) -> np.ndarray:
    """k-means++ seeds (FAISS) over a seeded uniform subsample of ``max(seed_points, 2c)`` rows."""
    faiss = _faiss()
    n, d = x.shape
    if seed_points is not None and n > max(seed_points, 2 * c):
        rows = np.sort(np.random.default_rng(seed).permutation(n)[: max(seed_points, 2 * c)])
        x = np.ascontiguousarray(x[rows])
    init = np.empty((c, d), dtype=np.float32)
    pp = faiss.ClusteringInitialization(d, c)
    pp.method = faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS
    pp.seed = int(seed)
    pp.init_centroids(x.shape[0], faiss.swig_ptr(x), faiss.swig_ptr(init))
    return init


def kmeans(x: np.ndarray, c: int, seed: int, niter: int = 20, tol: float = 1e-3,
           seed_points: int | None = 8192, gpu: bool = False) -> tuple[np.ndarray, dict]:
    """FAISS k-means of the rows of ``x`` (``[n, d]``, as float32) into ``0 < c < n`` centroids.

    k-means++ seeding over at most ``seed_points`` rows (None: all of them), then at
    most ``niter`` Lloyd iterations of ``faiss.Kmeans`` over every row, stopping early
    when one changes the objective by at most ``tol`` (relative). FAISS moves a
    centroid that lost every point next to a large cluster's (it splits that cluster).
    Returns ``(centroids [c, d] float32, info)``: info's ``obj`` is FAISS's objective
    at each iteration (the inertia of the centroids *entering* it), ``iterations``
    their number, ``gpu`` whether it ran on a GPU.
    """
    faiss = _faiss()
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if not 0 < c < n:
        raise ValueError(f"kmeans needs 0 < c < n, got c={c}, n={n}")
    init = _seed_centroids(x, c, seed, seed_points)
    km = faiss.Kmeans(d, c, niter=niter, seed=int(seed), max_points_per_centroid=n, min_points_per_centroid=1,
                      early_stop_threshold=float(tol), check_input_data_for_NaNs=False)
    if gpu:
        km.index = _flat_index(d, gpu=True)
    km.train(x, init_centroids=init)
    return km.centroids, {"obj": [float(o) for o in km.obj], "iterations": len(km.obj), "gpu": bool(gpu)}


def _as_array(embeddings) -> np.ndarray:
    if isinstance(embeddings, torch.Tensor):
        x = embeddings.detach().to("cpu", torch.float32).numpy()
    else:
        x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be [n, d], got shape {tuple(x.shape)}")
    if x.size and not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or inf")
    return x


def select_prototypes(
    embeddings: np.ndarray | torch.Tensor,
    init_fraction: float,
    seed: int,
    niter: int = 20,
    tol: float = 1e-3,
    seed_points: int = 8192,
    gpu: bool | None = None,
    threads: int | None = None,
) -> list[int]:
    """Indices of ``c = ceil(init_fraction * n)`` distinct prototype samples.

    1. :func:`kmeans` (FAISS) on the float32 embeddings, centred first (which
       changes no distance and keeps FAISS's expanded ``|x|^2 - 2x.c + |c|^2`` form
       accurate): k-means++ seeding over at most ``seed_points`` rows, then at most
       ``niter`` Lloyd iterations over all rows, stopping early below a ``tol``
       relative change of the objective.
    2. Greedy matching: for each centroid in order, take its nearest sample not
       taken yet (its 16 nearest come from one FAISS search; a centroid whose 16
       are all taken scans every sample).

    ``gpu``: None runs on a GPU when :func:`faiss_gpu_available`; True requires one
    (ValueError otherwise, instead of FAISS's silent CPU run). ``threads``: FAISS's
    threads for the call (None: ``torch.get_num_threads()``).

    Returns ``c`` distinct indices (ints, in centroid order); all indices when
    ``c >= n``; ``[]`` when ``c == 0``. Deterministic for a given ``seed``, device and
    thread count.
    """
    x = _as_array(embeddings)
    n = x.shape[0]
    c = num_prototypes(n, init_fraction)
    if c == 0:
        return []
    if c >= n:
        return list(range(n))
    if gpu is None:
        gpu = faiss_gpu_available()
    elif gpu and not faiss_gpu_available():
        raise ValueError("select_prototypes(gpu=True): FAISS sees no GPU here (faiss-gpu not installed, or no CUDA)")

    x = np.ascontiguousarray(x - x.mean(0, dtype=np.float64).astype(np.float32))
    with _threads(torch.get_num_threads() if threads is None else threads):
        centroids, _ = kmeans(x, c, seed, niter=niter, tol=tol, seed_points=seed_points, gpu=gpu)
        index = _flat_index(x.shape[1], gpu)
        index.add(x)
        _, nbrs = index.search(centroids, min(n, NEIGHBOURS))

    return distinct_nearest(x, centroids, nbrs)


def distinct_nearest(x: np.ndarray, centroids: np.ndarray, nbrs: np.ndarray) -> list[int]:
    """One distinct sample per centroid, greedily in centroid order: the nearest of its candidate neighbours
    `nbrs[j]` (nearest first; -1 = none) not taken yet, else the nearest free sample over all of `x`."""
    taken: set[int] = set()
    out: list[int] = []
    sq = None
    for j, row in enumerate(np.asarray(nbrs).tolist()):
        pick = next((i for i in row if i >= 0 and i not in taken), None)
        if pick is None:  # all candidates taken: the nearest free sample over all of them
            if sq is None:
                sq = np.einsum("ij,ij->i", x, x)
            d = sq - 2.0 * (x @ centroids[j])
            d[np.fromiter(taken, dtype=np.int64)] = np.inf
            pick = int(d.argmin())
        taken.add(pick)
        out.append(pick)
    return out
