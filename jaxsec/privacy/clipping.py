"""Per-example clipped gradients as a function transformation, like ``jax.grad``.

``clipped_grad(loss_fn, l2_norm_clip)(params, *batch)`` returns ``sum_i g_i * min(1, C /
||g_i||_2)`` with ``g_i`` the gradient of example ``i`` (Abadi et al. 2016), and the norms
``||g_i||`` as auxiliary output. The sum has l2 sensitivity ``C`` under adding or removing
one example, which is what the Gaussian noise of DP-SGD is calibrated to.

``loss_fn(params, *batch) -> [B]`` returns per-example losses; every argument after
``params`` is batched along axis 0. Examples must not interact inside ``loss_fn`` (no
BatchNorm, no batch-mean loss), else no DP guarantee follows. An optional ``mask`` ([B], 0/1)
marks the real rows of a padded (Poisson) batch; masked rows contribute exactly zero.

Methods (equal up to float rounding, tested): ``'vmap'`` (``jax.vmap`` of ``jax.grad``, any
model, optionally in ``lax.scan`` micro-batches of ``microbatch_size``); ``'ghost'``: ghost
clipping (Goodfellow 2015; Li et al. 2021) with mixed ghost norms (Bu et al. 2022: per layer,
``<U U^T, G G^T>`` or the explicit ``U^T G``, whichever is cheaper) and book-keeping (Bu et
al. 2023: the clipped sum from each layer's weight-gradient op, no second backward pass), so
per-example gradients of the whole model are never materialised; ``'auto'`` (default) picks
ghost when :func:`auto_method` finds the model eligible, else vmap.
Ghost supports flax ``nn.Dense`` and ``nn.Conv`` (any rank, strides, padding, dilations,
``feature_group_count=1``), each called once, with or without bias. Any other parameter
(norm scales, embeddings, grouped or circular convs, shared layers) or a loss that reaches
a layer's parameters other than through its call (weight decay in the loss, tied weights)
raises ``ValueError`` naming the parameters: ghost clipping would drop that path from the
norms. Use ``method='vmap'`` there, or apply weight decay after the privatizer.

>>> import jax, jax.numpy as jnp
>>> loss = lambda w, x, y: (x @ w - y) ** 2
>>> g, info = clipped_grad(loss, 1.0)(jnp.ones(3), jnp.eye(3), jnp.zeros(3))
>>> info.norms.shape
(3,)
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxsec import _checks
from jaxsec import train as train_lib

METHODS = ('auto', 'vmap', 'ghost')
_TINY = 1e-12


class ClipInfo(NamedTuple):
  """Auxiliary output of a clipped gradient."""
  norms: jax.Array       # [B] per-example gradient l2 norms before clipping (0 if masked)
  factors: jax.Array     # [B] applied scale min(1, C / norm) * mask


def tree_norm(tree: Any) -> jax.Array:
  """Global l2 norm of a pytree."""
  leaves = jax.tree_util.tree_leaves(tree)
  return jnp.sqrt(sum(jnp.sum(jnp.square(l.astype(jnp.float32))) for l in leaves))


def clip_tree(tree: Any, l2_norm_clip: Any) -> tuple[Any, jax.Array]:
  """Scales ``tree`` by ``min(1, C / ||tree||)``; returns ``(clipped, norm)``."""
  norm = tree_norm(tree)
  factor = clip_factor(norm, l2_norm_clip)
  return jax.tree_util.tree_map(lambda l: (l * factor).astype(l.dtype), tree), norm


def clip_factor(norms: jax.Array, l2_norm_clip: Any) -> jax.Array:
  """``min(1, C / norm)``, equal to 1 for a zero norm."""
  return jnp.minimum(1.0, l2_norm_clip / jnp.maximum(norms, _TINY))


def _check_clip(l2_norm_clip):
  _checks.check_float('l2_norm_clip', l2_norm_clip, minimum=0.0, strict_min=True)


def _batch_size(batch):
  if not batch:
    raise ValueError('clipped_grad needs at least one batched argument after params.')
  sizes = {int(b.shape[0]) for b in jax.tree_util.tree_leaves(batch)}
  if len(sizes) != 1:
    raise ValueError(f'batched arguments have different leading sizes {sorted(sizes)}.')
  return sizes.pop()


def per_example_grads(loss_fn: Callable[..., jax.Array]) -> Callable[..., Any]:
  """``(params, *batch) -> grads`` with a leading example axis on every leaf (vmap)."""
  def single(params, *example):
    ex = jax.tree_util.tree_map(lambda e: e[None], example)
    return loss_fn(params, *ex)[0]
  grad_one = jax.grad(single)

  def fn(params, *batch):
    return jax.vmap(grad_one, in_axes=(None,) + (0,) * len(batch))(params, *batch)
  return fn


def _vmap_clipped(loss_fn, params, batch, mask, c):
  grads = per_example_grads(loss_fn)(params, *batch)
  leaves = jax.tree_util.tree_leaves(grads)
  sq = sum(jnp.sum(jnp.square(l.reshape(l.shape[0], -1).astype(jnp.float32)), axis=1)
           for l in leaves)
  norms = jnp.sqrt(sq) * mask
  factors = clip_factor(norms, c) * mask
  summed = jax.tree_util.tree_map(
      lambda l: jnp.tensordot(factors.astype(l.dtype), l, axes=(0, 0)), grads)
  return summed, ClipInfo(norms, factors)


# ----------------------------------------------------------------------------------------
# Ghost clipping for flax.linen Dense / Conv
# ----------------------------------------------------------------------------------------

_SUPPORTED = (nn.Dense, nn.Conv)


def _kernel_size(m: nn.Conv) -> tuple[int, ...]:
  """``m.kernel_size`` as a tuple: flax reads an int ``k`` as the 1-D kernel ``(k,)``."""
  k = m.kernel_size
  return (k,) if isinstance(k, int) else tuple(k)


def _conv_geometry(m: nn.Conv, nd: int):
  def tup(v, default):
    if v is None:
      return (default,) * nd
    if isinstance(v, int):
      return (v,) * nd
    return tuple(v)
  if m.feature_group_count != 1:
    raise ValueError(f'ghost clipping: Conv {m.path} has feature_group_count='
                     f'{m.feature_group_count}; only 1 is supported (use method="vmap").')
  pad = m.padding
  if isinstance(pad, str):
    if pad not in ('SAME', 'VALID', 'SAME_LOWER'):
      raise ValueError(f'ghost clipping: Conv {m.path} has padding={pad!r}; supported: '
                       "'SAME', 'VALID', explicit pads (use method='vmap').")
  elif isinstance(pad, int):
    pad = [(pad, pad)] * nd
  else:
    pad = [(p, p) if isinstance(p, int) else tuple(p) for p in pad]
  return (_kernel_size(m), tup(m.strides, 1), pad, tup(m.input_dilation, 1),
          tup(m.kernel_dilation, 1))


def _unfold(m: nn.Conv, a: jax.Array) -> jax.Array:
  """Patches of the conv input: [B, T, K] with T output positions, K = prod(k) * C_in."""
  nd = a.ndim - 2
  if nd < 1 or len(_kernel_size(m)) != nd:
    raise ValueError(f'ghost clipping: Conv {m.path} got input of shape {a.shape}; '
                     'expected [batch, *spatial, channels] with one batch axis.')
  ks, strides, pad, in_dil, k_dil = _conv_geometry(m, nd)
  sp = 'DHW'[-nd:] if nd <= 3 else None
  if sp is None:
    raise ValueError(f'ghost clipping: Conv {m.path}: spatial rank {nd} > 3 unsupported.')
  if all(d == 1 for d in in_dil):
    return _unfold_by_slicing(a, ks, strides, pad, k_dil)
  dn = ('N' + sp + 'C', sp + 'IO', 'N' + sp + 'C')
  patches = jax.lax.conv_general_dilated_patches(
      a, filter_shape=ks, window_strides=strides, padding=pad, lhs_dilation=in_dil,
      rhs_dilation=k_dil, dimension_numbers=dn)
  return patches.reshape(a.shape[0], -1, patches.shape[-1])


def _unfold_by_slicing(a, ks, strides, pad, k_dil):
  """Patches by strided slices of the padded input (memory moves only; XLA's
  conv_general_dilated_patches is an identity-kernel convolution, K times the work)."""
  nd = a.ndim - 2
  spatial = a.shape[1:-1]
  eff = [(k - 1) * d + 1 for k, d in zip(ks, k_dil, strict=True)]
  if isinstance(pad, str):
    pads = jax.lax.padtype_to_pads(spatial, eff, strides, pad)
  else:
    pads = [tuple(p) for p in pad]
  a = jnp.pad(a, [(0, 0)] + [tuple(p) for p in pads] + [(0, 0)])
  out = [(a.shape[1 + i] - eff[i]) // strides[i] + 1 for i in range(nd)]
  cols = []
  for offs in np.ndindex(*ks):
    start = [0] + [o * d for o, d in zip(offs, k_dil, strict=True)] + [0]
    limit = [a.shape[0]] + [st + (n - 1) * sd + 1 for st, n, sd in
                            zip(start[1:-1], out, strides, strict=True)] + [a.shape[-1]]
    cols.append(jax.lax.slice(a, start, limit, [1] + list(strides) + [1]))
  patches = jnp.stack(cols, axis=-2)          # [B, *out, prod(ks), C]
  return patches.reshape(a.shape[0], int(np.prod(out)), -1)


def _sq_norm_outer(u: jax.Array, g: jax.Array) -> jax.Array:
  """Per-example ||U_i^T G_i||_F^2 for U [B, T, K], G [B, T, D], by the cheaper route."""
  b, t, k = u.shape
  d = g.shape[-1]
  if t == 1:
    return jnp.sum(u[:, 0] ** 2, -1) * jnp.sum(g[:, 0] ** 2, -1)
  if t * t * (k + d) < t * k * d:   # ghost norm
    uu = jnp.einsum('btk,bsk->bts', u, u)
    gg = jnp.einsum('btd,bsd->bts', g, g)
    return jnp.sum(uu * gg, axis=(1, 2))
  pg = jnp.einsum('btk,btd->bkd', u, g)  # this layer's per-example kernel grads only
  return jnp.sum(pg ** 2, axis=(1, 2))


def _traced_model(loss_fn, batch):
  """Returns f(params, zs) -> (losses, acts) with zs added to supported layer outputs."""
  def f(params, zs, record=None):
    acts = {}
    def interceptor(next_fun, args, kwargs, ctx):
      m = ctx.module
      if ctx.method_name != '__call__' or type(m) not in _SUPPORTED:
        return next_fun(*args, **kwargs)
      path = tuple(m.path)
      if path in acts:
        raise ValueError(f'ghost clipping: layer {"/".join(path)} is called more than '
                         'once per forward pass (shared weights); use method="vmap".')
      out = next_fun(*args, **kwargs)
      acts[path] = args[0] if args else kwargs['inputs']
      if record is not None:
        record[path] = (m, jax.ShapeDtypeStruct(out.shape, out.dtype))
        return out
      return out + zs[path].astype(out.dtype)
    with nn.intercept_methods(interceptor):
      losses = loss_fn(params, *batch)
    return losses, acts
  return f


def _ghost_clipped(loss_fn, params, batch, mask, c):
  bsz = _batch_size(batch)
  f = _traced_model(loss_fn, batch)
  record: dict = {}
  jax.eval_shape(lambda p: f(p, None, record), params)
  if not record:
    raise ValueError('ghost clipping found no flax.linen Dense / Conv layer in loss_fn; '
                     'use method="vmap".')
  _check_coverage(params, record)
  _check_no_bypass(loss_fn, params, batch)
  zs = {p: jnp.zeros(s.shape, s.dtype) for p, (_, s) in record.items()}
  for p, (_, s) in record.items():
    if s.shape[0] != bsz:
      raise ValueError(f'ghost clipping: layer {"/".join(p)} output {s.shape} has no '
                       f'leading batch axis of size {bsz}.')
  losses, vjp_fn, acts = jax.vjp(lambda p, z: f(p, z), params, zs, has_aux=True)
  if losses.shape != (bsz,):
    raise ValueError(f'loss_fn must return per-example losses of shape ({bsz},); got '
                     f'{losses.shape}.')
  cot = mask.astype(losses.dtype)
  _, gz = vjp_fn(cot)   # per-example output gradients (param grads are dead code)
  sq = jnp.zeros((bsz,), jnp.float32)
  for path, (m, _) in record.items():
    a, g = acts[path].astype(jnp.float32), gz[path].astype(jnp.float32)
    if isinstance(m, nn.Conv):
      u = _unfold(m, a)
      gg = g.reshape(bsz, -1, g.shape[-1])
    else:
      u = a.reshape(bsz, -1, a.shape[-1])
      gg = g.reshape(bsz, -1, g.shape[-1])
    sq = sq + _sq_norm_outer(u, gg)
    if m.use_bias:
      sq = sq + jnp.sum(jnp.sum(gg, axis=1) ** 2, axis=-1)
  norms = jnp.sqrt(sq) * mask
  factors = clip_factor(norms, c) * mask
  # Book-keeping (Bu et al. 2023): the clipped sum of each layer's gradient is that layer's
  # own weight-gradient op at the recorded input with output cotangent factors_i * g_i, so
  # no second backward pass through the network is needed.
  layer_grads = {}
  for path, (m, _) in record.items():
    layer = m.clone(parent=None)
    p_layer = params['params']
    for name in path:
      p_layer = p_layer[name]
    g = gz[path]
    cg = g * factors.reshape((-1,) + (1,) * (g.ndim - 1)).astype(g.dtype)
    a = acts[path]
    _, vjp_layer = jax.vjp(lambda pl, layer=layer, a=a: layer.apply({'params': pl}, a),
                           p_layer)
    layer_grads[path] = vjp_layer(cg)[0]

  def rebuild(tree, prefix):
    if prefix[1:] in layer_grads and prefix[:1] == ('params',):
      return layer_grads[prefix[1:]]
    return type(tree)({k: rebuild(v, prefix + (k,)) for k, v in tree.items()})
  summed = rebuild(params, ())
  return summed, ClipInfo(norms, factors)


def _key_name(k):
  return getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', str(k))))


def _bypass_params(loss_fn, params, batch) -> list[str]:
  """Parameters the loss is differentiable in *other than* through their own layer's call.

  Every supported layer is re-run with ``stop_gradient`` on its own variables (its input
  stays differentiable); the parameters whose tangent still reaches the losses in the JVP
  (dead code removed) are used directly by ``loss_fn``: weight decay inside the loss, tied
  weights, a kernel read from the params dict. Structural, so a path whose gradient
  happens to be 0 at these values (decay on a zero-initialised bias) is found as well.
  """
  depth = [0]

  def interceptor(next_fun, args, kwargs, ctx):
    m = ctx.module
    if depth[0] or ctx.method_name != '__call__' or type(m) not in _SUPPORTED:
      return next_fun(*args, **kwargs)
    variables = jax.tree_util.tree_map(jax.lax.stop_gradient, dict(m.variables))
    depth[0] += 1
    try:
      return m.clone(parent=None).apply(variables, *args, **kwargs)
    finally:
      depth[0] -= 1

  def h(p):
    with nn.intercept_methods(interceptor):
      return loss_fn(p, *batch)

  spec = jax.tree_util.tree_map(lambda l: jax.ShapeDtypeStruct(l.shape, l.dtype), params)
  closed = jax.make_jaxpr(lambda p, t: jax.jvp(h, (p,), (t,))[1])(spec, spec)
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  n = len(flat)
  try:
    from jax._src.interpreters import partial_eval as pe  # pylint: disable=g-import-not-at-top
    _, used = pe.dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars))
  except (ImportError, AttributeError, TypeError):  # conservative: any reference counts
    refs = {id(v) for e in closed.jaxpr.eqns for v in e.invars}
    refs |= {id(v) for v in closed.jaxpr.outvars}
    used = [id(v) in refs for v in closed.jaxpr.invars]
  return ['/'.join(str(_key_name(k)) for k in kp)
          for (kp, _), u in zip(flat, used[n:2 * n], strict=True) if u]


def _check_no_bypass(loss_fn, params, batch):
  bypass = _bypass_params(loss_fn, params, batch)
  if bypass:
    raise ValueError(
        f'ghost clipping: loss_fn uses the parameter(s) {", ".join(bypass)} outside their '
        "layer's call (weight decay inside the loss, tied weights, a kernel read from the "
        'params); ghost clipping only sees gradients that flow through layer outputs and '
        "would drop these paths from the per-example norms. Use method='vmap', or keep "
        'weight decay out of the clipped loss and apply it after the privatizer '
        '(optax.add_decayed_weights; post-processing, no privacy cost).')


def _check_coverage(params, record):
  covered = set()
  for path, (m, _) in record.items():
    covered.add(('params',) + path + ('kernel',))
    if m.use_bias:
      covered.add(('params',) + path + ('bias',))
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  for kp, _ in flat:
    names = tuple(getattr(k, 'key', getattr(k, 'name', str(k))) for k in kp)
    if names not in covered:
      raise ValueError(f'ghost clipping: parameter {"/".join(map(str, names))} does not '
                       'belong to a supported flax.linen Dense / Conv layer (or params are '
                       'not a flax variable dict); use method="vmap".')


def _ghost_ineligible(loss_fn, params, batch) -> str | None:
  """Why ghost clipping refuses ``loss_fn`` at these shapes (``None``: eligible)."""
  try:
    bsz = _batch_size(batch)
    f = _traced_model(loss_fn, batch)
    record: dict = {}
    jax.eval_shape(lambda p: f(p, None, record), params)
    if not record:
      return 'no flax.linen Dense / Conv layer'
    for path, (_, sd) in record.items():
      if not sd.shape or sd.shape[0] != bsz:
        return f'layer {"/".join(path)} has no leading batch axis'
    _check_coverage(params, record)
    _check_no_bypass(loss_fn, params, batch)
  except ValueError as e:
    return str(e)
  return None


def auto_method(loss_fn: Callable[..., jax.Array], params: Any, *batch: Any) -> str:
  """The implementation ``method='auto'`` uses for these arguments: ``'ghost'`` when every
  parameter belongs to a supported flax Dense / Conv layer reached only through its call,
  else ``'vmap'``. Decided from shapes and structure (at trace time; no FLOPs run)."""
  return 'vmap' if _ghost_ineligible(loss_fn, params, batch) else 'ghost'


def _auto_clipped(loss_fn, params, batch, mask, c):
  if _ghost_ineligible(loss_fn, params, batch) is None:
    return _ghost_clipped(loss_fn, params, batch, mask, c)
  return _vmap_clipped(loss_fn, params, batch, mask, c)


# ----------------------------------------------------------------------------------------


def clipped_grad(loss_fn: Callable[..., jax.Array], l2_norm_clip: Any = None, *,
                 method: str = 'auto', microbatch_size: int | None = None,
                 mesh: Any = None, batch_axis: str = 'data'
                 ) -> Callable[..., tuple[Any, ClipInfo]]:
  """Transforms a per-example loss into its summed per-example-clipped gradient.

  Args:
    loss_fn: ``loss_fn(params, *batch) -> [B]`` per-example losses.
    l2_norm_clip: clipping norm C > 0 (may be overridden per call, e.g. by adaptive
      clipping, with the ``l2_norm_clip=`` keyword of the returned function).
    method: 'auto' (default: 'ghost' where the model is eligible, else 'vmap'; see
      :func:`auto_method`), 'vmap' (any model) or 'ghost' (flax Dense / Conv models,
      refuses others; see module doc).
    microbatch_size: process this many examples at a time (both methods); the batch is
      padded with masked examples to a multiple of it.
    mesh, batch_axis: with a ``jax.sharding.Mesh``, the batch is split over the mesh axis
      ``batch_axis`` with ``jax.shard_map``: each device clips its own examples and the
      clipped sums are ``psum``-ed (params replicated). Use this when the batch is
      sharded: under plain GSPMD partitioning, ``vmap`` of a convolution's gradient
      over a batch-sharded input returned *wrong* per-example gradients here (jax 0.10,
      CPU; the grouped convolution it lowers to is mis-partitioned; tested in
      tests/privacy/test_sharding.py). The ghost path is correct either way.

  Returns:
    ``fn(params, *batch, mask=None, l2_norm_clip=None) -> (sum_i clip(g_i), ClipInfo)``.
  """
  if l2_norm_clip is not None:
    _check_clip(l2_norm_clip)
  _checks.check_choice('method', method, METHODS)
  if microbatch_size is not None:
    _checks.check_int('microbatch_size', microbatch_size, minimum=1)
  impl = {'auto': _auto_clipped, 'vmap': _vmap_clipped, 'ghost': _ghost_clipped}[method]

  def fn(params, *batch, mask=None, l2_norm_clip=l2_norm_clip):
    if l2_norm_clip is None:
      raise ValueError('l2_norm_clip must be given (to clipped_grad or to the call).')
    _check_clip(l2_norm_clip)
    bsz = _batch_size(batch)
    mask_arr = (jnp.ones((bsz,), jnp.float32) if mask is None
                else jnp.asarray(mask).astype(jnp.float32))
    if mask_arr.shape != (bsz,):
      raise ValueError(f'mask has shape {mask_arr.shape}; expected ({bsz},).')
    if mesh is not None:
      return _sharded(params, batch, mask_arr, l2_norm_clip)
    return _local(params, batch, mask_arr, l2_norm_clip)

  def _sharded(params, batch, mask_arr, c):
    P = jax.sharding.PartitionSpec
    n_dev = mesh.shape[batch_axis]
    bsz = mask_arr.shape[0]
    if bsz % n_dev:
      raise ValueError(f'batch size {bsz} is not divisible by mesh axis {batch_axis!r} of '
                       f'size {n_dev}.')
    bspec = jax.tree_util.tree_map(lambda _: P(batch_axis), batch)

    def local(params, batch, mask_arr, c):
      g, info = _local(params, batch, mask_arr, c)
      return jax.lax.psum(g, batch_axis), info
    return jax.shard_map(local, mesh=mesh, in_specs=(P(), bspec, P(batch_axis), P()),
                         out_specs=(P(), P(batch_axis)), check_vma=False)(
                             params, batch, mask_arr, jnp.asarray(c, jnp.float32))

  def _local(params, batch, mask_arr, l2_norm_clip):
    bsz = mask_arr.shape[0]
    if microbatch_size is None or microbatch_size >= bsz:
      return impl(loss_fn, params, batch, mask_arr, l2_norm_clip)
    m = microbatch_size
    nb = -(-bsz // m)
    pad = nb * m - bsz
    def chunk(a):
      if pad:
        a = jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)], axis=0)
      return a.reshape((nb, m) + a.shape[1:])
    cb = jax.tree_util.tree_map(chunk, batch)
    cm = chunk(mask_arr) if not pad else jnp.concatenate(
        [mask_arr, jnp.zeros((pad,), jnp.float32)]).reshape(nb, m)
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)
    def body(acc, xs):
      b, mk = xs
      g, info = impl(loss_fn, params, b, mk, l2_norm_clip)
      return jax.tree_util.tree_map(jnp.add, acc, g), info
    summed, infos = jax.lax.scan(body, zero, (cb, cm))
    info = jax.tree_util.tree_map(lambda v: v.reshape(-1)[:bsz], infos)
    return summed, info
  return fn


def from_model(apply_fn: train_lib.ApplyFn,
               loss: Callable[[jax.Array, jax.Array], jax.Array]) -> Callable[..., jax.Array]:
  """Per-example ``loss_fn(params, x, y)`` from ``apply_fn`` and a logits loss."""
  return lambda params, x, y: loss(apply_fn(params, x), y)
