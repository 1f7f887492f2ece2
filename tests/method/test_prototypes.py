"""Round-1 prototypes (FAISS k-means + nearest distinct sample) and the frozen text encoders
that embed the public questions for them. The torch k-means that picked them before FAISS
(benchmarks/torch_kmeans.py, row 4's "torch path") is the reference FAISS's Lloyd
iterations are checked against."""

import math
import sys
from collections import Counter
import types

import numpy as np
import pytest
import torch

from ladalit.core.encoder import Encoder, HashingEncoder, TextEncoder, make_encoder
import faiss

from benchmarks import torch_kmeans
from ladalit.method import prototypes
from ladalit.method.prototypes import _seed_centroids, faiss_gpu_available, kmeans, num_prototypes, select_prototypes


def _clusters(seed=0, k=6, per=25, d=16, spread=0.05, sep=10.0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * sep
    x = np.concatenate([c + spread * rng.standard_normal((per, d)) for c in centres]).astype(np.float32)
    labels = np.repeat(np.arange(k), per)
    perm = rng.permutation(len(x))  # clusters not in contiguous blocks
    return x[perm], labels[perm]


# ------------------------------------------------------------------- prototypes
@pytest.mark.parametrize("n,frac", [(100, 0.1), (30, 0.1), (57, 0.25), (10, 0.05), (1000, 0.013)])
def test_prototype_count_distinct_and_deterministic(n, frac):
    x = np.random.default_rng(n).standard_normal((n, 8)).astype(np.float32)
    protos = select_prototypes(x, frac, seed=3)
    assert len(protos) == math.ceil(round(frac * n, 9)) == num_prototypes(n, frac)
    assert len(set(protos)) == len(protos)
    assert all(isinstance(i, int) and 0 <= i < n for i in protos)
    assert protos == select_prototypes(x, frac, seed=3)


def test_num_prototypes_ceil_without_float_noise():
    assert num_prototypes(30, 0.1) == 3  # 0.1 * 30 == 3.0000000000000004 in float
    assert num_prototypes(31, 0.1) == 4
    assert num_prototypes(1000, 0.001) == 1
    assert num_prototypes(5, 3.0) == 5
    with pytest.raises(ValueError):
        num_prototypes(5, -0.1)


def test_prototype_edge_cases():
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    assert select_prototypes(x, 0.0, seed=0) == []
    assert select_prototypes(x, 1.0, seed=0) == [0, 1, 2, 3, 4]
    assert select_prototypes(x, 2.5, seed=0) == [0, 1, 2, 3, 4]
    assert select_prototypes(np.zeros((0, 4), np.float32), 0.5, seed=0) == []
    # torch input and float64 input are accepted
    assert select_prototypes(torch.from_numpy(x).double(), 0.4, seed=1) == select_prototypes(x, 0.4, seed=1)


def test_one_prototype_per_well_separated_cluster_nearest_its_centre():
    k, per = 6, 25
    x, labels = _clusters(k=k, per=per)
    for seed in range(4):
        protos = select_prototypes(x, k / len(x), seed=seed)
        assert len(protos) == k
        assert sorted(labels[protos].tolist()) == list(range(k))
        for p in protos:
            members = np.flatnonzero(labels == labels[p])
            centre = x[members].mean(0)
            nearest = members[np.argmin(((x[members] - centre) ** 2).sum(1))]
            assert p == nearest


@pytest.mark.parametrize("seed_points", [8192, 250])
def test_one_prototype_per_cluster_for_many_clusters_and_seeds(seed_points):
    # 20 clusters: a random-sample init (FAISS's default) found one per cluster in 3 of 20 seeds here,
    # k-means++ seeding must find it in every seed (also from a 250-row seeding subsample)
    x, labels = _clusters(seed=7, k=20, per=25)
    for seed in range(10):
        protos = select_prototypes(x, 20 / len(x), seed=seed, seed_points=seed_points)
        assert sorted(labels[protos].tolist()) == list(range(20))


def test_distinct_even_when_centroids_share_a_nearest_sample():
    # 2 tight duplicates-heavy groups, ask for more prototypes than distinct locations:
    # several centroids coincide, the greedy matching must still return distinct samples
    x = np.concatenate([np.zeros((10, 3)), np.ones((10, 3))]).astype(np.float32)
    x += 1e-4 * np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    protos = select_prototypes(x, 0.5, seed=0)
    assert len(protos) == 10 and len(set(protos)) == 10


def test_different_seeds_can_differ_but_each_is_reproducible():
    x = np.random.default_rng(1).standard_normal((300, 8)).astype(np.float32)
    a = [select_prototypes(x, 0.05, seed=s) for s in range(3)]
    assert a == [select_prototypes(x, 0.05, seed=s) for s in range(3)]
    assert len({tuple(p) for p in a}) > 1


def test_bad_embeddings_are_rejected_with_one_clear_error():
    x = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        select_prototypes(x[0], 0.5, seed=0)
    for bad in (np.nan, np.inf):
        y = x.copy()
        y[3, 1] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            select_prototypes(y, 0.2, seed=0)
    with pytest.raises(ValueError, match="init_fraction"):
        select_prototypes(x, float("nan"), seed=0)


def test_every_selection_runs_faiss_kmeans(monkeypatch):
    # no FAISS-free path: with faiss.Kmeans broken, selecting 0 < c < n prototypes fails
    calls = []

    class Spy(faiss.Kmeans):
        def train(self, *a, **k):
            calls.append((self.k, self.cp.max_points_per_centroid))
            return super().train(*a, **k)

    x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    monkeypatch.setattr(faiss, "Kmeans", Spy)
    assert len(select_prototypes(x, 0.1, seed=0)) == 30
    assert calls == [(30, 300)]  # every row is a training row: FAISS does not subsample

    class Broken(faiss.Kmeans):
        def train(self, *a, **k):
            raise RuntimeError("faiss.Kmeans was called")

    monkeypatch.setattr(faiss, "Kmeans", Broken)
    with pytest.raises(RuntimeError, match="faiss.Kmeans was called"):
        select_prototypes(x, 0.1, seed=0)


def test_missing_faiss_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    x = np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32)
    with pytest.raises(ImportError, match="faiss-cpu"):
        select_prototypes(x, 0.1, seed=0)
    assert select_prototypes(x, 0.0, seed=0) == []  # nothing to cluster: no FAISS needed


def test_gpu_only_when_faiss_sees_one(monkeypatch):
    x = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    if not faiss_gpu_available():
        with pytest.raises(ValueError, match="FAISS sees no GPU"):
            select_prototypes(x, 0.1, seed=0, gpu=True)
    # CUDA in torch but a FAISS with no GPU (faiss-cpu: Kmeans(gpu=True) would silently run on the CPU)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)
    assert not faiss_gpu_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    assert not faiss_gpu_available()


def test_threads_are_set_for_the_call_and_restored():
    x = np.random.default_rng(3).standard_normal((400, 8)).astype(np.float32)
    before = faiss.omp_get_max_threads()
    seen = []
    orig = prototypes.kmeans

    def spy(*a, **k):
        seen.append(faiss.omp_get_max_threads())
        return orig(*a, **k)

    prototypes.kmeans = spy
    try:
        one = select_prototypes(x, 0.05, seed=2, threads=1)
        two = select_prototypes(x, 0.05, seed=2, threads=2)
        assert two == select_prototypes(x, 0.05, seed=2, threads=2)
    finally:
        prototypes.kmeans = orig
    assert seen[:2] == [1, 2] and faiss.omp_get_max_threads() == before
    assert len(set(one)) == len(set(two)) == 20


def test_faiss_seeds_spread_over_clusters_deterministic_and_subsampled():
    x, labels = _clusters(k=5, per=30)
    for seed in range(5):
        init = _seed_centroids(x, 5, seed, None)
        assert init.dtype == np.float32 and init.shape == (5, x.shape[1])
        rows = [int(np.flatnonzero((x == c).all(1))[0]) for c in init]  # seeds are real rows
        assert sorted(labels[rows].tolist()) == [0, 1, 2, 3, 4]
        assert np.array_equal(init, _seed_centroids(x, 5, seed, None))
    # candidates: a seeded 40 of the 150 rows (max(seed_points, 2c)), still one seed per cluster
    sub = _seed_centroids(x, 5, 0, 40)
    assert np.array_equal(sub, _seed_centroids(x, 5, 0, 40)) and not np.array_equal(sub, _seed_centroids(x, 5, 1, 40))
    rows = [int(np.flatnonzero((x == c).all(1))[0]) for c in sub]
    assert sorted(labels[rows].tolist()) == [0, 1, 2, 3, 4]


def test_faiss_lloyd_matches_the_torch_reference_from_the_same_seeds():
    # FAISS's Lloyd iterations == the torch reference's updates from the same seeds; FAISS's objective
    # at each iteration == the float64 inertia of the centroids entering it, over *all* rows (n = 3000
    # > 256 * c: FAISS's default max_points_per_centroid would have subsampled to 1280)
    x = np.random.default_rng(2).standard_normal((3000, 12)).astype(np.float32)
    c, seed = 5, 0
    init = _seed_centroids(x, c, seed, None)
    xt, cur = torch.from_numpy(x), torch.from_numpy(init.copy())
    sq = (xt * xt).sum(1)
    states = [cur]
    for _ in range(3):
        labels, _ = torch_kmeans.assign(xt, sq, cur)
        counts = torch.bincount(labels, minlength=c)
        assert (counts > 0).all()  # no empty cluster (FAISS splits one, the reference keeps it)
        cur = torch.zeros_like(cur).index_add_(0, labels, xt) / counts[:, None].float()
        states.append(cur)
    centroids, info = kmeans(x, c, seed, niter=3, tol=0.0, seed_points=None)
    assert info["iterations"] == 3 and not info["gpu"]
    np.testing.assert_allclose(centroids, states[-1].numpy(), atol=1e-4, rtol=1e-4)
    for obj, state in zip(info["obj"], states):
        assert obj == pytest.approx(_inertia64(x, state.numpy()), rel=1e-5)
    assert all(b <= a * (1 + 1e-6) for a, b in zip(info["obj"], info["obj"][1:]))  # Lloyd never worsens
    # early stop: a change of at most tol ends it (FAISS compares from its second iteration on)
    assert kmeans(x, c, seed, niter=20, tol=1.0, seed_points=None)[1]["iterations"] == 2
    with pytest.raises(ValueError, match="0 < c < n"):
        kmeans(x[:5], 5, seed)


def test_torch_reference_kmeans_pp_init_spreads_over_clusters_and_is_deterministic():
    x, labels = _clusters(k=5, per=30)
    xt = torch.from_numpy(x)
    for seed in range(5):
        init = torch_kmeans.kmeans_pp_init(xt, 5, seed=seed)
        assert init.dtype == torch.float32 and init.shape == (5, x.shape[1])
        rows = [int(np.flatnonzero((x == c.numpy()).all(1))[0]) for c in init]
        assert sorted(labels[rows].tolist()) == [0, 1, 2, 3, 4]
        assert torch.equal(init, torch_kmeans.kmeans_pp_init(xt, 5, seed=seed))


def test_torch_reference_kmeans_pp_init_subsample_and_coincident_points():
    x, labels = _clusters(k=4, per=50)
    xt = torch.from_numpy(x)
    init = torch_kmeans.kmeans_pp_init(xt, 4, seed=0, max_points=40)  # candidates: 40 of the 200 rows, seeded
    rows = [int(np.flatnonzero((x == c.numpy()).all(1))[0]) for c in init]
    assert sorted(labels[rows].tolist()) == [0, 1, 2, 3]
    assert torch.equal(init, torch_kmeans.kmeans_pp_init(xt, 4, seed=0, max_points=40))
    # 3 locations of 2 rows each, 5 centres: after all 3 are covered the rest are free rows
    # (each location used at most twice), not a draw from an all-zero distribution
    dup = torch.tensor([[0.0, 0], [0, 0], [1, 1], [1, 1], [5, 5], [5, 5]])
    counts = Counter(map(tuple, torch_kmeans.kmeans_pp_init(dup, 5, seed=1).tolist()))
    assert set(counts) == {(0.0, 0.0), (1.0, 1.0), (5.0, 5.0)} and max(counts.values()) <= 2


def _inertia64(x, centroids):
    x, c = np.asarray(x, np.float64), np.asarray(centroids, np.float64)
    return float(((x[:, None, :] - c[None]) ** 2).sum(-1).min(1).sum())


def test_torch_reference_kmeans_inertia_matches_float64_and_lloyd_never_worsens():
    x = np.random.default_rng(2).standard_normal((600, 12)).astype(np.float32)
    xt = torch.from_numpy(x)
    seeded = torch_kmeans.kmeans_pp_init(xt, 20, seed=0)
    prev = _inertia64(x, seeded)
    for niter in (1, 2, 5):
        centroids, inertia, iters = torch_kmeans.kmeans(xt, 20, seed=0, niter=niter, tol=0.0)
        assert iters == niter
        ref = _inertia64(x, centroids)
        assert inertia == pytest.approx(ref, rel=1e-5)
        assert ref <= prev * (1 + 1e-6)
        prev = ref
    # early stop: a huge tol stops after the first update
    assert torch_kmeans.kmeans(xt, 20, seed=0, niter=20, tol=1.0)[2] == 1


def test_torch_reference_kmeans_centroid_that_loses_every_point_stays_put():
    # 2 locations, 3 centres: two centres share a location, ties go to the first, the
    # other owns no point and must keep its position (not become 0/0 = NaN)
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [10.0, 10.0], [10.0, 10.0]])
    centroids, inertia, _ = torch_kmeans.kmeans(x, 3, seed=0, niter=5, tol=0.0)
    assert torch.isfinite(centroids).all() and inertia == 0.0
    assert {tuple(r) for r in centroids.tolist()} == {(0.0, 0.0), (10.0, 10.0)}


# --------------------------------------------------------------------- encoders
def test_hashing_encoder_deterministic_normalised_and_similarity_aware():
    enc = HashingEncoder(dim=128)
    texts = ["What is 12 + 7?", "what is 12 + 7?", "Name the capital of France.", ""]
    a = enc.encode(texts)
    assert a.shape == (4, 128) and a.dtype == torch.float32
    torch.testing.assert_close(a, HashingEncoder(dim=128).encode(texts))  # no per-process salt
    torch.testing.assert_close(a[:3].norm(dim=1), torch.ones(3))
    torch.testing.assert_close(a[0], a[1])  # lower-cased
    # a text with no n-gram of the requested length embeds to zeros, not NaN
    assert torch.equal(HashingEncoder(dim=8, ngram_min=3, ngram_max=4).encode([""]), torch.zeros(1, 8))
    near = HashingEncoder(dim=128).encode(["What is 12 + 8?"])[0]
    assert a[0] @ near > a[0] @ a[2] + 0.3
    assert enc.encode([]).shape == (0, 128)


def test_encode_cached_uses_keys_and_encodes_only_missing():
    calls = []

    class Counting(HashingEncoder):
        def encode(self, texts):
            calls.append(list(texts))
            return super().encode(texts)

    enc = Counting(dim=32)
    e1 = enc.encode_cached([1, 2, 1], ["alpha", "beta", "alpha"])
    assert calls == [["alpha", "beta"]]  # duplicates in one call encoded once
    torch.testing.assert_close(e1[0], e1[2])
    e2 = enc.encode_cached([2, 3], ["IGNORED because key 2 is cached", "gamma"])
    assert calls[-1] == ["gamma"]
    torch.testing.assert_close(e2[0], e1[1])
    torch.testing.assert_close(e2[1], enc.encode(["gamma"])[0])
    assert enc.cache_size == 3
    assert enc.encode_cached([], []).shape == (0, 32)
    with pytest.raises(ValueError):
        enc.encode_cached([1], ["a", "b"])


def test_make_encoder_names_and_dotted_path():
    assert isinstance(make_encoder("hashing", dim=16), HashingEncoder)
    mod = types.ModuleType("_ladalit_test_encoders")

    class Const(Encoder):
        def __init__(self, dim=3):
            super().__init__()
            self.dim = dim

        def encode(self, texts):
            return torch.ones(len(texts), self.dim)

    mod.Const = Const
    mod.NotEncoder = dict
    sys.modules[mod.__name__] = mod
    try:
        enc = make_encoder("_ladalit_test_encoders:Const", dim=5)
        assert isinstance(enc, Const) and enc.encode(["x"]).shape == (1, 5)
        with pytest.raises(TypeError):
            make_encoder("_ladalit_test_encoders:NotEncoder")
    finally:
        del sys.modules[mod.__name__]
    with pytest.raises(ValueError):
        make_encoder("bert")


@pytest.fixture(scope="module")
def minilm():
    return make_encoder("minilm", batch_size=4)


def test_minilm_encoder_shape_norm_batching_and_semantics(minilm):
    assert isinstance(minilm, TextEncoder) and minilm.dim == 384
    texts = [
        "A cat is sleeping on the sofa.",
        "A kitten naps on the couch.",
        "The stock market fell sharply today.",
        "Solve for x: 2x + 3 = 11.",
        "What value of x satisfies 2x + 3 = 11?",
        "short",
    ]
    e = minilm.encode(texts)  # batch_size 4 -> two batches, padding differs between them
    assert e.shape == (6, 384) and e.dtype == torch.float32 and e.device.type == "cpu"
    torch.testing.assert_close(e.norm(dim=1), torch.ones(6))
    assert not e.requires_grad
    # batching/padding does not change an embedding
    torch.testing.assert_close(minilm.encode(texts[5:])[0], e[5], atol=1e-5, rtol=1e-4)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.3  # paraphrases closer than unrelated text
    assert sim[3, 4] > sim[3, 2] + 0.3
    assert all(not p.requires_grad for p in minilm.model.parameters())


def test_prototypes_on_minilm_embeddings_pick_one_per_topic(minilm):
    topics = {
        "cooking": ["How long should pasta boil?", "What temperature bakes bread?", "How do I season a cast iron pan?"],
        "astronomy": ["How far is the Moon from Earth?", "Why do stars twinkle?", "What is a black hole?"],
        "finance": ["What is compound interest?", "How do bonds pay coupons?", "What is a stock dividend?"],
    }
    texts = [t for ts in topics.values() for t in ts]
    labels = np.repeat(np.arange(3), 3)
    emb = minilm.encode_cached(list(range(len(texts))), texts)
    # the topics are loose on MiniLM (within-topic squared distances 1.2-1.8, across 1.6-2.1), so k-means++
    # from one seed can start two centres in one topic and stay there (FAISS: 14 of these 20 seeds find one
    # per topic, the torch reference 16): most seeds must, where a random 3 of 9 does in 27/84 = 32%
    hits = sum(sorted(labels[select_prototypes(emb, 3 / 9, seed=s)].tolist()) == [0, 1, 2] for s in range(20))
    assert hits >= 12
