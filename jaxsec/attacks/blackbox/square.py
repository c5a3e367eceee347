"""Square Attack (Andriushchenko, Croce, Flammarion, Hein, ECCV 2020): score-based black box.

Random search over the vertices (L_inf) or the sphere (L2) of the threat model: each
iteration replaces a random square window of the perturbation, queries ``query_fn: x ->
scores`` once, and keeps the proposal only if it strictly lowers the loss or succeeds (the
official ``idx_improved | idx_miscl``). Losses: margin ``z_y - max_{j != y} z_j`` (targeted:
``max_{j != t} z_j - z_t``) or cross-entropy. From the paper (Algorithm 1, Sec. 3, Appendix)
and the official code (max-andr/square-attack, AutoAttack's ``square.py``):
:func:`p_selection` halves ``p_init`` as ``int(i / N * 10000)`` passes 10, 50, 200, 500,
1000, 2000, 4000, 6000, 8000. L_inf starts at vertical stripes ``clip(x + eps s)`` and sets
windows of side ``round(sqrt(p H W))`` (in ``[1, min(H, W) - 1]``) to ``x + eps sigma_c``
(one sign per channel). L2 starts at a grid of ``min(H, W) // 5`` tiles of the meta
pseudo-Gaussian pattern; windows of odd side ``max(round(sqrt(p H W)), 3)`` get the mass of a
second, zeroed window plus the unused budget; the result is rescaled to ``eps`` and clipped.

Deliberate differences: window positions (and L2 pattern transpositions) drawn per example
over all ``H - s + 1`` positions (official: one per batch for L2, never the last);
per-example ``fold_in(key, example index)`` randomness; the L_inf "must change the window"
resampling capped at 32 draws (the official loop never ends when no sign can change it, e.g.
``eps = 0``; the query is then spent on an unchanged point); L2 windows capped at
``min(H, W)`` and tiles centred on each axis (the official code fails on small images and
mixes offsets); the clean query is counted: ``info['queries'] <= num_queries`` (the paper
counts ``queries - 1``). Layout: NHWC, ``[B, H, W]`` one channel; flat ``[B, D]`` is one row
of ``D`` pixels (squares are segments of ``round(p D)``); ``W = 1`` is handled transposed.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxsec import _checks
from jaxsec.attacks.blackbox import estimators
from jaxsec.attacks.evasion import common

NORMS = ('linf', 'l2')
LOSSES = ('margin', 'ce')
# Rescaled iterations (out of 10000) after which p is halved (official p_selection).
P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_RESAMPLE_TRIES = 32           # one uint32 word of candidate signs per channel
_TINY = 1e-12


# --------------------------------------------------------------------------- schedule


def p_selection(p_init: float, it: int, n_iters: int, rescale: bool = True) -> float:
  """The fraction ``p`` of pixels changed at iteration ``it`` of a budget of ``n_iters``.

  The official piecewise-constant schedule: ``it`` is rescaled to ``int(it / n_iters *
  10000)`` (``rescale``, the official ``resc_schedule=True``; AutoAttack's Square stage
  uses ``False``, the raw iteration) and ``p = p_init / 2^k`` with ``k`` the number of
  thresholds in :data:`P_HALVINGS` strictly below it (``p_init`` again past 10000).
  """
  if rescale:
    it = int(it / n_iters * 10000)
  if it > 10000:
    return p_init
  return p_init / 2 ** sum(it > t for t in P_HALVINGS)


def _schedule(p_init: float, num_iters: int, num_queries: int,
              rescale: bool = True) -> np.ndarray:
  """The halving index ``k`` (``p = p_init / 2^k``) of each iteration, as a constant."""
  ks = [int(round(math.log2(p_init / p_selection(p_init, i, num_queries, rescale))))
        for i in range(num_iters)]
  return np.asarray(ks if ks else [0], np.int32)


def _linf_window(p: float, h: int, w: int) -> tuple[int, int]:
  """(rows, cols) of the L_inf window for the fraction ``p`` on an ``h x w`` image."""
  if h > 1:
    s = int(round(math.sqrt(p * h * w)))
    s = min(max(s, 1), min(h, w) - 1)
    return s, s
  s = min(max(int(round(p * w)), 1), max(w - 1, 1))
  return 1, s


def _l2_window(p: float, h: int, w: int) -> tuple[int, int]:
  """(rows, cols) of the L2 windows: side ``max(round(sqrt(p H W)), 3)``, odd, capped."""
  if h > 1:
    s = max(int(round(math.sqrt(p * h * w))), 3)
    s = min(s + 1 if s % 2 == 0 else s, h, w)
    return s, s
  s = max(int(round(p * w)), 3)
  s = min(s + 1 if s % 2 == 0 else s, w)
  return 1, s


# --------------------------------------------------------------------------- L2 patterns


def pseudo_gaussian_rect(x: int, y: int) -> np.ndarray:
  """The official ``pseudo_gaussian_pert_rectangles``: concentric rectangles around the
  centre with weight ``1 / (k + 1)^2`` summed, normalised to unit L2 norm."""
  delta = np.zeros([x, y])
  if x == 0 or y == 0:
    return delta
  x_c, y_c = x // 2 + 1, y // 2 + 1
  c0, c1 = x_c - 1, y_c - 1
  for counter in range(max(x_c, y_c)):
    delta[max(c0, 0):min(c0 + (2 * counter + 1), x),
          max(0, c1):min(c1 + (2 * counter + 1), y)] += 1.0 / (counter + 1) ** 2
    c0 -= 1
    c1 -= 1
  return delta / np.sqrt(np.sum(delta ** 2))


def meta_pattern(h: int, w: int) -> np.ndarray:
  """Two pseudo-Gaussian lobes of opposite sign, unit L2 norm (the official
  ``meta_pseudo_gaussian_pert`` for a square ``h = w``, before its random transposition).

  Squares are split into a top and a bottom half; a row (``h = 1``) into a left and a right
  half.
  """
  delta = np.zeros([h, w])
  if h > 1:
    delta[:h // 2] = pseudo_gaussian_rect(h // 2, w)
    delta[h // 2:] = -pseudo_gaussian_rect(h - h // 2, w)
  else:
    delta[:, :w // 2] = pseudo_gaussian_rect(1, w // 2)
    delta[:, w // 2:] = -pseudo_gaussian_rect(1, w - w // 2)
  return delta / np.sqrt(np.sum(delta ** 2))


def _l2_pattern_tables(windows, h):
  """Stacked patterns [K, SH, SW] (and their transposes) for the schedule's windows."""
  sh = max(a for a, _ in windows)
  sw = max(b for _, b in windows)
  if h > 1:
    sh = sw = max(sh, sw)
  pats = np.zeros((len(windows), sh, sw))
  pats_t = np.zeros((len(windows), sh, sw))
  for k, (a, b) in enumerate(windows):
    m = meta_pattern(a, b)
    pats[k, :a, :b] = m
    if h > 1:
      pats_t[k, :b, :a] = m.T
    else:
      pats_t[k, :a, :b] = m
  return pats, pats_t


def _l2_init_tables(h: int, w: int):
  """Static maps for the L2 initialisation: tile id of each pixel (-1: none) and the tile
  pattern value at each pixel, plain and transposed."""
  if h > 1:
    th = tw = max(min(h, w) // 5, 1)
  else:
    th, tw = 1, max(w // 5, 1)
  nh, nw = h // th, w // tw
  oh, ow = (h - nh * th) // 2, (w - nw * tw) // 2
  tile = -np.ones((h, w), np.int32)
  p0 = np.zeros((h, w))
  p1 = np.zeros((h, w))
  m = meta_pattern(th, tw)
  mt = m.T if h > 1 else m
  for i in range(nh):
    for j in range(nw):
      r, c = oh + i * th, ow + j * tw
      tile[r:r + th, c:c + tw] = i * nw + j
      p0[r:r + th, c:c + tw] = m
      p1[r:r + th, c:c + tw] = mt
  return tile, p0, p1, nh * nw


# --------------------------------------------------------------------------- layout


def _image_view(x: jax.Array):
  """``x`` as ``[B, H, W, C]`` (rows last when ``W = 1``) and the map back to its shape."""
  shape = x.shape
  if x.ndim == 2:
    x4 = x.reshape((shape[0], 1, shape[1], 1))
  elif x.ndim == 3:
    x4 = x[..., None]
  elif x.ndim == 4:
    x4 = x
  else:
    raise ValueError(f'x has shape {tuple(shape)}; the Square Attack expects images '
                     '[B, H, W, C] or [B, H, W], or flat inputs [B, D].')
  swap = x4.shape[2] == 1 and x4.shape[1] > 1
  if swap:
    x4 = jnp.swapaxes(x4, 1, 2)

  def back(z):
    if swap:
      z = jnp.swapaxes(z, 1, 2)
    return z.reshape(shape)
  return x4, back


def _loss_fn(loss: str, targeted: bool):
  """The per-example loss ``f(scores, y) -> [B]`` the attack *minimises*."""
  if loss == 'margin':
    return (lambda z, y: -common.margin(z, y)) if targeted else common.margin
  if targeted:
    return common.cross_entropy
  return lambda z, y: -common.cross_entropy(z, y)


# --------------------------------------------------------------------------- proposals


def _window_mask(h, w, r, c, sh, sw):
  rows = jnp.arange(h)[:, None]
  cols = jnp.arange(w)[None, :]
  return (rows >= r) & (rows < r + sh) & (cols >= c) & (cols < c + sw)


# Randomness: one ``jax.random.bits`` call per example and step gives a vector of uint32
# words from which every draw of the step is derived (integers in [0, m) as ``word % m``,
# a relative bias below m / 2^32; fair coins from single bits). Separate ``randint`` /
# ``bernoulli`` calls would each compile their own threefry graph, which dominated the
# compile time of the attack.


def _randint(word, m):
  return (word % m.astype(jnp.uint32)).astype(jnp.int32)


def _sign(word, dtype):
  return jnp.where((word & 1) == 1, 1.0, -1.0).astype(dtype)


def _linf_init(words, x, eps, bounds):
  """The vertical-stripe start of one example [H, W, C] from ``W * C`` random words."""
  h, w, c = x.shape
  sign = _sign(words[:w * c].reshape((1, w, c)), x.dtype)
  return jnp.clip(x + eps * sign, *bounds)


def linf_window_update(x, x_best, row, col, sh, sw, sign, *, eps, bounds):
  """The L_inf Square proposal of one example [H, W, C]: the ``sh x sw`` window at
  (``row``, ``col``) of ``x_best`` set to ``clip(x + eps * sign_c)`` (``sign`` [C] in
  {-1, 1}), the rest unchanged. Equal to the official ``clip(clip_ball(x_best + 2 eps
  sign_c))`` on the window, since ``x_best`` lies in the ball."""
  h, w, _ = x.shape
  m = _window_mask(h, w, row, col, sh, sw)[..., None]
  return jnp.where(m, jnp.clip(x + eps * sign, *bounds), x_best)


def accept_proposal(l_new, loss_best, succ_new, active, first=False):
  """The official acceptance rule: a proposal replaces the current point when it strictly
  lowers the loss, or when it succeeds (misclassified / at the target; for the margin loss
  the same thing, for 'ce' a success may not lower the loss), or at the initial point
  (``first``). Returns ``(accept, loss at the new current point)`` (a success ends the
  example, so the official ``loss_min``, left unchanged there, is never used again).
  """
  accept = active & (first | (l_new < loss_best) | succ_new)
  return accept, jnp.where(accept, l_new, loss_best)


def _linf_propose(words, x, x_best, k, eps, bounds, sh_tab, sw_tab):
  """One L_inf Square update of one example [H, W, C] (window index ``k`` of the tables)
  from ``2 + C`` random words."""
  h, w, c = x.shape
  sh, sw = sh_tab[k], sw_tab[k]
  words = words[:2 + c]
  r = _randint(words[0], h - sh + 1)
  col = _randint(words[1], w - sw + 1)
  m = _window_mask(h, w, r, col, sh, sw)[..., None]
  x_plus = jnp.clip(x + eps, *bounds)
  x_minus = jnp.clip(x - eps, *bounds)
  # Does setting channel c of the window to +eps / -eps change the current point?
  ch_plus = jnp.any(m & (x_plus != x_best), axis=(0, 1))      # [C]
  ch_minus = jnp.any(m & (x_minus != x_best), axis=(0, 1))
  # Candidate signs: bit t of word c is the sign of channel c in draw t.
  plus = ((words[2:, None] >> jnp.arange(_RESAMPLE_TRIES, dtype=jnp.uint32)) & 1).T == 1
  changes = jnp.any(jnp.where(plus, ch_plus, ch_minus), axis=-1)
  pick = plus[jnp.argmax(changes)]                            # first that changes
  return linf_window_update(x, x_best, r, col, sh, sw, jnp.where(pick, 1.0, -1.0).astype(
      x.dtype), eps=eps, bounds=bounds)


def _l2_init(words, x, eps, bounds, tile, p0, p1, n_tiles):
  """The tiled pseudo-Gaussian start of one example from ``n_tiles * (C + 1)`` words."""
  h, w, c = x.shape
  words = words[:n_tiles * (c + 1)].reshape((n_tiles, c + 1))
  tr = (words[:, 0] & 1) == 1
  sign = _sign(words[:, 1:], x.dtype)
  t = jnp.maximum(tile, 0)
  inside = (tile >= 0)[..., None]
  pat = jnp.where(tr[t], p1, p0).astype(x.dtype)[..., None]
  delta = jnp.where(inside, pat * sign[t], 0.0)
  n = jnp.sqrt(jnp.sum(delta * delta))
  return jnp.clip(x + delta * (eps / jnp.maximum(n, _TINY)), *bounds)


def _l2_update(x, x_best, r1, c1, r2, c2, sh, sw, transpose, sign, k, eps, bounds, pats,
               pats_t):
  """The deterministic part of one L2 Square update of one example [H, W, C]: windows of
  ``sh x sw`` at ``(r1, c1)`` (updated) and ``(r2, c2)`` (zeroed), pattern ``k`` of the
  tables (transposed if ``transpose``), signs ``sign`` [C] (official ``square_attack_l2``)."""
  h, w, c = x.shape
  m1 = _window_mask(h, w, r1, c1, sh, sw)[..., None]
  m2 = _window_mask(h, w, r2, c2, sh, sw)[..., None]
  delta = x_best - x
  sq = lambda a: jnp.sqrt(jnp.sum(a * a, axis=(0, 1)))        # per-channel norm [C]
  norm_w1 = sq(jnp.where(m1, delta, 0.0))
  norm_img = jnp.sqrt(jnp.sum(delta * delta))
  norm_w12 = sq(jnp.where(m1 | m2, delta, 0.0))
  # The pattern of the window, placed at (r1, c1).
  ih = jnp.clip(jnp.arange(h)[:, None] - r1, 0, pats.shape[1] - 1)
  iw = jnp.clip(jnp.arange(w)[None, :] - c1, 0, pats.shape[2] - 1)
  pat = jnp.where(transpose, pats_t[k][ih, iw], pats[k][ih, iw]).astype(x.dtype)[..., None]
  new = jnp.where(m1, pat * sign + delta / (1e-10 + norm_w1), 0.0)
  budget = jnp.sqrt(jnp.maximum(eps * eps - norm_img * norm_img, 0.0) / c
                    + norm_w12 * norm_w12)
  new = new / jnp.maximum(sq(new), _TINY) * budget
  delta = jnp.where(m1, new, jnp.where(m2, 0.0, delta))
  n = jnp.sqrt(jnp.sum(delta * delta))
  return jnp.clip(x + delta * (eps / jnp.maximum(n, _TINY)), *bounds)


def _l2_propose(words, x, x_best, k, eps, bounds, sh_tab, sw_tab, pats, pats_t):
  """One L2 Square update of one example [H, W, C]: random windows, signs, transposition
  from ``5 + C`` random words."""
  h, w, c = x.shape
  sh, sw = sh_tab[k], sw_tab[k]
  r1 = _randint(words[0], h - sh + 1)
  c1 = _randint(words[1], w - sw + 1)
  r2 = _randint(words[2], h - sh + 1)
  c2 = _randint(words[3], w - sw + 1)
  transpose = (words[4] & 1) == 1
  sign = _sign(words[5:5 + c], x.dtype)
  return _l2_update(x, x_best, r1, c1, r2, c2, sh, sw, transpose, sign, k, eps, bounds,
                    pats, pats_t)


# --------------------------------------------------------------------------- engine


def run_square(query_fn, x, y, key, *, eps, norm, num_queries, p_init, targeted, loss,
               bounds, history=False, rescale_schedule=True) -> tuple[jax.Array, ...]:
  """The Square Attack engine. Returns ``(x_adv, success, queries, loss)``.

  With ``history=True`` (for tests and analysis) the loop runs all iterations without the
  early exit and a fifth output, the current point after the initialisation and after
  every iteration, ``[num_queries - 1, B, ...]``, is returned.
  """
  lo, hi = bounds
  bounds = (jnp.asarray(lo, x.dtype), jnp.asarray(hi, x.dtype))
  x4, back = _image_view(x)
  b, h, w, c = x4.shape
  eps = jnp.asarray(eps, x.dtype)
  loss_fn = _loss_fn(loss, targeted)
  scores_of = lambda z: common.as_multiclass(query_fn(back(z)))

  num_iters = max(num_queries - 2, 0)
  sched = jnp.asarray(_schedule(p_init, num_iters, num_queries, rescale_schedule))
  ps = [p_init / 2 ** j for j in range(len(P_HALVINGS) + 1)]
  if norm == 'linf':
    windows = [_linf_window(p, h, w) for p in ps]
  else:
    windows = [_l2_window(p, h, w) for p in ps]
  sh_tab = jnp.asarray([a for a, _ in windows], jnp.int32)
  sw_tab = jnp.asarray([q for _, q in windows], jnp.int32)

  if norm == 'linf':
    n_words = max(w * c, 2 + c)
    init = functools.partial(_linf_init, eps=eps, bounds=bounds)
    propose = functools.partial(_linf_propose, eps=eps, bounds=bounds, sh_tab=sh_tab,
                                sw_tab=sw_tab)
  else:
    tile, p0, p1, n_tiles = _l2_init_tables(h, w)
    n_words = max(n_tiles * (c + 1), 5 + c)
    init = functools.partial(_l2_init, eps=eps, bounds=bounds, tile=jnp.asarray(tile),
                             p0=jnp.asarray(p0), p1=jnp.asarray(p1), n_tiles=n_tiles)
    pats, pats_t = _l2_pattern_tables(windows, h)
    propose = functools.partial(_l2_propose, eps=eps, bounds=bounds, sh_tab=sh_tab,
                                sw_tab=sw_tab, pats=jnp.asarray(pats),
                                pats_t=jnp.asarray(pats_t))
  init = jax.vmap(init)
  propose = jax.vmap(propose, in_axes=(0, 0, 0, None))
  # Per-example streams: the draws of an example do not depend on the rest of the batch.
  ex_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(b))

  # Query 1: the clean point. Examples already misclassified (or already at the target)
  # are returned unchanged and never queried again.
  scores = scores_of(x4)
  done = common.success(scores, y, targeted)
  loss_best = loss_fn(scores, y)
  queries = jnp.ones((b,), jnp.int32)

  # Step 0 queries the initial point and accepts it whatever its loss (as the official
  # code does); step i >= 1 is iteration i - 1 of the random search and accepts only a
  # strict improvement. One loop body for both keeps one copy of the model and of the
  # random-number generator in the compiled program.
  def step(i, carry):
    x_best, loss_best, done, queries = carry
    active = ~done
    words = jax.vmap(lambda k: jax.random.bits(jax.random.fold_in(k, i), (n_words,),
                                               jnp.uint32))(ex_keys)
    x_new = lax.cond(i == 0, lambda: init(words, x4),
                     lambda: propose(words, x4, x_best, sched[jnp.maximum(i - 1, 0)]))
    scores = scores_of(x_new)
    l_new = loss_fn(scores, y)
    succ = common.success(scores, y, targeted)
    accept, loss_best = accept_proposal(l_new, loss_best, succ, active, i == 0)
    x_best = common.select(accept, x_new, x_best)
    done = done | (accept & succ)
    return x_best, loss_best, done, queries + active.astype(jnp.int32)

  num_steps = num_queries - 1
  carry = (x4, loss_best, done, queries)
  extra: tuple[jax.Array, ...] = ()
  if history:
    def scan_body(cr, i):
      cr = step(i, cr)
      return cr, back(cr[0])
    carry, hist = lax.scan(scan_body, carry, jnp.arange(num_steps))
    extra = (hist,)
  elif num_steps > 0:
    def cond(st):
      return (st[0] < num_steps) & jnp.any(~st[1][2])

    def body(st):
      return st[0] + 1, step(st[0], st[1])
    _, carry = lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), carry))
  x_best, loss_best, done, queries = carry
  return (back(x_best), done, queries, loss_best) + extra


def _check_square_input(x):
  if x.ndim not in (2, 3, 4):
    raise ValueError(f'x has shape {tuple(x.shape)}; the Square Attack expects images '
                     '[B, H, W, C] or [B, H, W], or flat inputs [B, D].')


def square(*, eps, norm: str = 'linf', num_queries: int = 5000, p_init: float = 0.8,
           targeted: bool = False, loss: str = 'margin', bounds=(0.0, 1.0),
           rescale_schedule: bool = True):
  """Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020), L_inf and L2.

  Score-based black box: the returned ``attack(query_fn, x, y, key)`` only evaluates
  ``query_fn: x -> scores`` (logits, or log-probabilities; with the 'ce' loss the scores
  are read as logits, and log-probabilities are logits up to a constant). See the module
  docstring for the algorithm and the points where it departs from the official code.

  Guarantees: every returned example satisfies ``||x_adv - x||_p <= eps`` (up to float
  rounding) and ``lo <= x_adv <= hi``; each example uses at most ``num_queries`` queries,
  the clean query included; the loss of the current point never increases before success
  (a proposal is kept only if it strictly lowers the loss, or if it succeeds, which with
  loss='ce' may raise it); an example stops being queried (and updated)
  as soon as it is misclassified (untargeted) or classified as its target (targeted), and
  examples already so at the clean input are returned unchanged after one query.

  Inside one jitted program the batch shape is fixed: every iteration queries the whole
  batch and masks out the finished examples, whose extra evaluations are not counted in
  ``info['queries']`` (an attacker with a real API would not send them); the loop exits
  as soon as every example is finished.

  Args:
    eps: radius of the threat model (may be traced: ``jax.vmap`` over eps works).
    norm: 'linf' or 'l2'.
    num_queries: the query budget per example (>= 1), counting the clean query and the
      initial point; ``num_queries - 2`` random-search iterations.
    p_init: initial fraction of pixels changed by one update, in (0, 1] (the paper tunes
      it per data set, e.g. 0.05 for L_inf on ImageNet; AutoAttack uses 0.8).
    targeted: ``y`` are target labels and success means predicting them.
    loss: 'margin' (the paper's choice for untargeted attacks) or 'ce' (cross-entropy, the
      paper's choice for targeted attacks); both are minimised, see the module docstring.
    bounds: the input box ``(lo, hi)``.
    rescale_schedule: rescale the ``p`` schedule to the budget (the official
      ``resc_schedule``, default True); AutoAttack's Square stage uses False (the
      schedule of a 10000-query budget, with 5000 queries).

  Returns:
    ``attack(query_fn, x, y, key) -> AttackOutput`` (budget 'fixed'); ``x`` is
    ``[B, H, W, C]``, ``[B, H, W]`` or ``[B, D]`` (see the module docstring). Info:
    ``success`` (bool [B], misclassified / at the target at ``x_adv``), ``queries``
    (int32 [B], queries spent per example) and ``loss`` (the loss at ``x_adv``, [B]).

  >>> import jax, jax.numpy as jnp
  >>> w = jnp.linspace(-1.0, 1.0, 16)
  >>> f = lambda x: jnp.stack([jnp.zeros(x.shape[0]), x @ w - 0.5], axis=1)
  >>> atk = square(eps=0.3, num_queries=100)
  >>> out = atk(f, jnp.full((2, 16), 0.5), jnp.zeros(2, jnp.int32), jax.random.key(0))
  >>> bool(out.info['success'].all()), bool((out.info['queries'] <= 100).all())
  (True, True)
  """
  bounds = common.check_common(eps=eps, norm_=norm, bounds=bounds, norms=NORMS)
  num_queries = _checks.check_int('num_queries', num_queries, minimum=1)
  p_init = float(_checks.check_float('p_init', p_init, minimum=0.0, maximum=1.0,
                                     strict_min=True, allow_traced=False))
  _checks.check_choice('loss', loss, LOSSES)
  common.check_bool(targeted=targeted, rescale_schedule=rescale_schedule)

  return estimators.score_attack(run_square, bounds, check=_check_square_input, eps=eps,
      norm=norm, num_queries=num_queries, p_init=p_init, targeted=targeted, loss=loss,
      rescale_schedule=rescale_schedule)
