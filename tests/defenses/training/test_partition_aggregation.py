"""Deep Partition Aggregation (Levine & Feizi 2021): hash partition, certificate, and an
end-to-end check that the certificate holds (and is tight) under real retraining."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsec import train as train_lib
from jaxsec.defenses.training import partition_aggregation as pa


def _authors_certify(counts):
  """numpy transcription of github.com/alevine0/DPA SupContrast/certify.py."""
  idxsort = np.argsort(-counts, axis=1, kind='stable')
  valsort = -np.sort(-counts, axis=1, kind='stable')
  val, idx = valsort[:, 0], idxsort[:, 0]
  valsecond, idxsecond = valsort[:, 1], idxsort[:, 1]
  return idx, ((val - valsecond - (idxsecond <= idx)) / 2).astype(int)


def _all_counts(k, num_classes):
  """Every vote-count vector of k voters over num_classes classes."""
  for c in itertools.product(range(k + 1), repeat=num_classes):
    if sum(c) == k:
      yield np.array(c)


def test_partition_depends_on_content_only():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, 3, 2)).astype(np.float32)
  ids = pa.partition(x, num_partitions=7)
  assert ids.shape == (40,) and ids.dtype == np.int32 and set(ids) <= set(range(7))
  perm = rng.permutation(40)
  np.testing.assert_array_equal(pa.partition(x[perm], num_partitions=7), ids[perm])
  # one inserted / removed example changes exactly one part's contents
  def parts(xx):
    pid = pa.partition(xx, num_partitions=7)
    return [sorted(r.tobytes() for r in xx[pid == m]) for m in range(7)]
  base = parts(x)
  new = rng.normal(size=(1, 3, 2)).astype(np.float32)
  after_insert = parts(np.concatenate([x[:20], new, x[20:]]))
  after_delete = parts(np.delete(x, 11, axis=0))
  for after in (after_insert, after_delete):
    assert sum(a != b for a, b in zip(base, after, strict=True)) == 1
  with pytest.raises(ValueError, match='num_partitions=0'):
    pa.partition(x, num_partitions=0)


def test_content_order_is_order_independent():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(30, 4)).astype(np.float32)
  y = rng.integers(0, 3, 30)
  perm = rng.permutation(30)
  a = x[pa.content_order(x, y)]
  b = x[perm][pa.content_order(x[perm], y[perm])]
  np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('counts, pred, radius', [
    ([5, 0, 0], 0, 2),          # (5 - 0 - 0) // 2
    ([0, 5, 0], 1, 2),          # runner-up class 0 < 1: (5 - 0 - 1) // 2
    ([3, 2, 0], 0, 0),
    ([2, 3, 0], 1, 0),          # (3 - 2 - 1) // 2: one flip of a class-1 vote ties -> 0 wins
    ([2, 2, 1], 0, 0),          # tie: the smaller index wins, certified against nothing
    ([1, 2, 2], 1, 0),
    ([0, 4, 4, 2], 1, 0),
    ([4, 0, 0, 6], 3, 0),       # (6 - 4 - 1) // 2
    ([4, 0, 0, 7], 3, 1),
    ([0, 0, 9, 2], 2, 3),
])
def test_certify_closed_form(counts, pred, radius):
  cert = pa.certify(np.array([counts], np.int32))
  assert int(cert.prediction[0]) == pred and int(cert.radius[0]) == radius
  ap, ar = _authors_certify(np.array([counts]))
  assert (ap[0], ar[0]) == (pred, radius)


def test_certify_matches_authors_and_is_tight_exhaustively():
  """Every count vector of 6 voters over 3 classes: equal to the authors' rule; no change
  of <= radius votes changes the plurality; some change of radius + 1 votes does."""
  k, num_classes = 6, 3
  allc = np.stack(list(_all_counts(k, num_classes))).astype(np.int32)
  cert = pa.certify(allc)
  ap, ar = _authors_certify(allc)
  np.testing.assert_array_equal(cert.prediction, ap)
  np.testing.assert_array_equal(cert.radius, ar)
  plural = lambda c: int(np.argmax(c))
  for c, p, r in zip(allc, np.asarray(cert.prediction), np.asarray(cert.radius), strict=True):
    # counts reachable by changing at most t votes: |c - c'|_1 <= 2 t, same total
    reach = lambda t, c=c: [d for d in allc if np.abs(d - c).sum() <= 2 * t]
    assert all(plural(d) == p for d in reach(int(r)))
    assert any(plural(d) != p for d in reach(int(r) + 1))


def test_certify_and_accuracy_validation():
  with pytest.raises(ValueError, match='integer vote counts'):
    pa.certify(np.ones((2, 3), np.float32))
  with pytest.raises(ValueError, match='counts >= 0'):
    pa.certify(np.array([[2, -1]]))
  acc = pa.certified_accuracy(np.array([0, 1, 2]), np.array([3, 0, 1]), np.array([0, 1, 0]),
                              [0, 1, 2, 4])
  np.testing.assert_allclose(acc, [2 / 3, 1 / 3, 1 / 3, 0.0])
  with pytest.raises(ValueError, match='budgets entry=-1'):
    pa.certified_accuracy(np.zeros(2), np.zeros(2), np.zeros(2), [-1])


K, D, N, PARTS = 3, 4, 150, 5


def _data():
  rng = np.random.default_rng(0)
  means = rng.normal(size=(K, D)) * 2
  y = rng.integers(0, K, N).astype(np.int32)
  x = (means[y] + rng.normal(size=(N, D))).astype(np.float32)
  return x, y, means.astype(np.float32)


def _apply(p, z):
  return z @ p['w'] + p['b']


def _init(key):
  return {'w': 0.01 * jax.random.normal(key, (D, K)), 'b': jnp.zeros(K)}


_KW = dict(num_partitions=PARTS, num_classes=K, capacity=60, optimizer=optax.sgd(0.1),
           key=jax.random.key(0), batch_size=10, num_epochs=10)


def _votes(params, z):
  return np.argmax(train_lib.predict_logits_many(_apply, params, z), -1)[:, 0]


def test_certificate_holds_under_retraining_and_is_tight():
  """Training is order-independent; poison the r = radius parts that vote for the winner
  with one inserted point each (a huge-norm copy of the test point labelled as another
  class; it flips its part's vote) and retrain: the untouched parts' models are
  bit-identical and the prediction holds; r + 1 such insertions flip it."""
  x, y, xt = _data()
  m = pa.train(_apply, _init, x, y, **_KW)
  assert m.sizes.sum() == N and m.params['w'].shape == (PARTS, D, K)
  # each base model is a function of its part's contents, not of the data's order
  perm = np.random.default_rng(5).permutation(N)
  mp = pa.train(_apply, _init, x[perm], y[perm], **_KW)
  for a, b in zip(jax.tree.leaves(m.params), jax.tree.leaves(mp.params), strict=True):
    np.testing.assert_array_equal(a, b)
  cert = pa.certify(pa.vote_counts(_apply, m.params, xt, num_classes=K))
  i = int(np.argmax(np.asarray(cert.radius)))
  c, r = int(cert.prediction[i]), int(cert.radius[i])
  assert r >= 1
  target = (c + 1) % K
  votes = _votes(m.params, xt[i:i + 1])

  def craft(part):      # a poison point whose hash lands in `part`
    for j in range(10_000):
      xp = (1000.0 * xt[i] + 1e-3 * j)[None].astype(np.float32)
      if pa.partition(xp, num_partitions=PARTS)[0] == part:
        return xp
    raise AssertionError('no poison point found')

  for budget in (r, r + 1):
    hit = [p for p in range(PARTS) if votes[p] == c][:budget]
    assert len(hit) == budget
    xp = np.concatenate([craft(p) for p in hit])
    m2 = pa.train(_apply, _init, np.concatenate([x, xp]),
                  np.concatenate([y, np.full(budget, target, np.int32)]), **_KW)
    for p in range(PARTS):
      same = all(np.array_equal(a[p], b[p]) for a, b in
                 zip(jax.tree.leaves(m.params), jax.tree.leaves(m2.params), strict=True))
      assert same == (p not in hit), p
    v2 = _votes(m2.params, xt[i:i + 1])
    assert all(v2[p] != c for p in hit)          # the attack flips every part it touches
    pred2 = int(pa.certify(pa.vote_counts(_apply, m2.params, xt[i:i + 1],
                                          num_classes=K)).prediction[0])
    assert (pred2 == c) == (budget <= r), (budget, r, pred2)


def test_train_validation():
  x, y, _ = _data()
  with pytest.raises(ValueError, match='capacity=20 is smaller than the largest part'):
    pa.train(_apply, _init, x, y, **{**_KW, 'capacity': 20})
  with pytest.raises(ValueError, match='capacity=5 must be >= 10'):
    pa.train(_apply, _init, x, y, **{**_KW, 'capacity': 5})
  with pytest.raises(ValueError, match='label 3'):
    pa.train(_apply, _init, x, np.where(y == 0, 3, y).astype(np.int32), **_KW)


def test_vote_counts_by_hand():
  perms = np.array([[0, 1, 2], [1, 0, 2], [1, 2, 2]])    # model m predicts perms[m, i] on e_i
  params = {'w': np.eye(3, dtype=np.float32)[perms], 'b': np.zeros((3, 3), np.float32)}
  counts = pa.vote_counts(_apply, params, np.eye(3, dtype=np.float32), num_classes=3)
  np.testing.assert_array_equal(counts, [[1, 2, 0], [1, 1, 1], [0, 0, 3]])
  cert = pa.certify(counts)
  np.testing.assert_array_equal(cert.prediction, [1, 0, 2])
  np.testing.assert_array_equal(cert.radius, [0, 0, 1])
  with pytest.raises(ValueError, match='expected num_classes=4'):
    pa.vote_counts(_apply, params, np.eye(3, dtype=np.float32), num_classes=4)


def test_train_part_is_the_ensembles_model():
  """One base model trained alone on the shared layout (``train_part``: what retraining
  after an edit of one part needs) equals that model of the ensemble's fit_many program."""
  x, y, _ = _data()
  m = pa.train(_apply, _init, x, y, **_KW)
  kw = {k: v for k, v in _KW.items() if k not in ('num_partitions', 'num_classes', 'capacity')}
  lay = pa.partition_layout(x, y, num_partitions=PARTS, num_classes=K, capacity=60)
  assert lay.masks.shape == (PARTS, lay.x.shape[0]) and (lay.masks.sum(1) == 60).all()
  np.testing.assert_array_equal(lay.ids, m.partition_ids)
  for part in (0, PARTS - 1):
    one = pa.train_part(_apply, _init, lay, part, **kw)
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(m.params), strict=True):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b)[part], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='part=5'):
    pa.train_part(_apply, _init, lay, PARTS, **kw)
