r"""Encrypted (CKKS) and secret-shared (three-party MPC) inference of an FMNIST MLP.

    python -m experiments.run --config=experiments/configs/encrypted_inference.py --workdir=docs/results
    python -m experiments.run --config=experiments/configs/encrypted_inference.py:smoke --workdir=/tmp/s

The survey's encryption defense (§3.4(1)) applied at inference time, after CryptoNets
(Gilad-Bachrach et al., ICML 2016: a network with square activations evaluated on
homomorphically encrypted MNIST, 99% accuracy, 250 s per batch of 8192 images on 2016
hardware). The client average-pools each 28x28 image 2x2 (to 196 values) before encrypting
or sharing it; the model is :class:`jaxsec.models.MLP` 196 -> ``hidden`` -> 10 with
:func:`jaxsec.crypto.mlp_export.square` activations, trained in the clear with Adam. Then:

1. plaintext: float32 accuracy on the whole test set and on the subsets below;
2. CKKS (:func:`jaxsec.crypto.ckks.encrypted_mlp_logits`, TenSEAL, N = 8192, 128-bit): one
   ciphertext per query; accuracy, agreement of the decrypted argmax with the plaintext
   argmax, the largest logit error against the float64 network, wall seconds per query
   (encrypt + evaluate + decrypt, one process), ciphertext bytes per query each way, and the
   evaluation keys sent once;
3. MPC (:func:`jaxsec.crypto.mpc_inference.mpc_mlp_logits`, MPyC, three processes on
   localhost, semi-honest honest majority, ``SecFxp(64, 24)``): the same network; logits and
   a securely computed argmax opened to the client; the error against the plaintext network
   on the same fixed-point grid; party 0's seconds per query and the bytes all parties sent
   per query, and for sharing the weights once.

Deviations from CryptoNets: FMNIST, not MNIST; a dense network on pooled input (their first
layer is a 5x5 convolution with stride 2 and their network has two square layers); one image
per ciphertext (latency) instead of 8192 images across the slots (throughput); CKKS, not
YASHE'; and only ``n_ckks`` / ``n_mpc`` test images run under encryption / sharing (a few
seconds per CKKS query on a shared 2-core CPU; the whole test set runs in the clear).
"""
from __future__ import annotations

import jax
import ml_collections
import numpy as np
import optax

from experiments import defense_common as dc
from jaxsec import models
from jaxsec.crypto import ckks
from jaxsec.crypto import mlp_export
from jaxsec.crypto import mpc_inference

NAME = 'encrypted_inference'
CRYPTONETS = ('CryptoNets (Gilad-Bachrach et al., ICML 2016): MNIST, 99% accuracy, 250 s per '
              'batch of 8192 encrypted images (about 0.03 s per image amortised) on 2016 '
              'hardware')


def pool(x: np.ndarray, k: int) -> np.ndarray:
  """``k x k`` average pooling of ``[B, H, W, C]`` images (the client does it before
  encrypting)."""
  if k == 1:
    return x
  b, h, w, c = x.shape
  return x[:, :h // k * k, :w // k * k].reshape(b, h // k, k, w // k, k, c).mean(axis=(2, 4))


def _summary(pred, yt, plain_pred, seconds, logits, ref) -> dict:
  """Accuracy, agreement with the plaintext predictions, latency and the logit error
  against the plaintext reference ``ref``, on the first ``len(pred)`` test images."""
  n = len(pred)
  return {'n': int(n), 'accuracy': float(np.mean(pred == yt[:n])),
          'agreement': float(np.mean(pred == plain_pred[:n])),
          'seconds_per_query_mean': float(np.mean(seconds)),
          'seconds_per_query_median': float(np.median(seconds)),
          'plaintext_accuracy': float(np.mean(plain_pred[:n] == yt[:n])),
          'max_abs_logit_error': float(np.abs(logits - ref).max()),
          'max_abs_logit': float(np.abs(ref).max())}


def _ckks_row(settings, layers, x, yt, plain) -> dict:
  dc.log(f'{NAME}: CKKS inference on {len(x)} test images')
  # A child process: TenSEAL crashes beside TensorFlow, which loaded the data here.
  out = ckks.encrypted_mlp_logits_isolated(layers, x, context_kwargs=settings.to_dict())
  pred = out.logits.argmax(1)
  hit = _summary(pred, yt, plain, out.info['seconds'], out.logits,
                 mlp_export.mlp_forward(layers, x, 'square'))
  hit.update({
      'bytes_query': float(np.mean(out.info['bytes_query'])),
      'bytes_reply': float(np.mean(out.info['bytes_reply'])),
      'bytes_public_context': int(out.info['bytes_public_context']),
      'evaluate_seconds_mean': float(np.mean(out.info['evaluate_seconds'])),
      'prediction': pred.tolist()})
  return hit


def _mpc_row(settings, layers, x, yt, plain) -> dict:
  dc.log(f'{NAME}: three-party MPC inference on {len(x)} test images')
  out = mpc_inference.mpc_mlp_logits(layers, x, activation='square', **settings.to_dict())
  ref = mpc_inference.fixed_point_reference(layers, x, activation='square',
                                            frac_bits=settings.frac_bits)
  hit = _summary(out.argmax, yt, plain, out.info['seconds'], out.logits, ref)
  hit.update({
      'logits_argmax_agree': bool(np.all(out.logits.argmax(1) == out.argmax)),
      'bytes_per_query': float(np.mean(out.info['bytes'])),
      'bytes_model': int(out.info['bytes_model']),
      'wall_seconds': float(out.info['wall_seconds']),
      'prediction': out.argmax.tolist()})
  return hit


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  (x, y, xt, yt), key, scratch, cache, results, save = dc.start_study(cfg, workdir, NAME,
                                                                     'inference')
  x, xt = pool(x, cfg.pool), pool(xt, cfg.pool)
  model = models.get('mlp', num_classes=10, hidden=(cfg.hidden,), activation=mlp_export.square)
  base = {k: cfg[k] for k in ('seed', 'n_train', 'pool', 'hidden', 'epochs', 'batch_size',
                              'learning_rate')}
  tag = dc.tag_of(base)
  dc.log(f'{NAME}: training the square-activation MLP ({x.shape[1] * x.shape[2]} -> '
         f'{cfg.hidden} -> 10)')
  p0 = models.init(model, jax.random.fold_in(key, 1), (1,) + x.shape[1:])
  params, tinfo = dc.train_timed(
      model.apply, p0, x, y, optimizer=optax.adam(cfg.learning_rate),
      key=jax.random.fold_in(key, 2), num_epochs=cfg.epochs, batch_size=cfg.batch_size,
      checkpoint_dir=dc.ckpt_dir(scratch, NAME, 'train', tag), label='square-mlp')
  f = lambda z: model.apply(params, z)
  plain = dc.predictions(f, xt)
  layers = mlp_export.mlp_layers(params)
  results['train'] = tinfo
  results['plaintext'] = {'n': int(len(yt)), 'accuracy': float(np.mean(plain == yt)),
                          'parameters': int(sum(w.size + b.size for w, b in layers))}
  save()

  for name, n_images, settings, infer in (('ckks', cfg.n_ckks, cfg.ckks, _ckks_row),
                                          ('mpc', cfg.n_mpc, cfg.mpc, _mpc_row)):
    n = min(n_images, len(yt))
    stage_cfg = (base, settings.to_dict(), n)
    hit = cache.get(name, stage_cfg)
    if hit is None:
      hit = infer(settings, layers, xt[:n], yt, plain)
      cache.put(name, stage_cfg, hit)
    results['inference'][name] = hit
    save()
  return results


def _mb(b: float) -> str:
  return f'{b / 1e6:.2f} MB' if b >= 1e5 else f'{b / 1e3:.1f} kB'


def render_markdown(r: dict) -> str:
  c = r['config']
  p, h, m = r['plaintext'], r['inference']['ckks'], r['inference']['mpc']
  side = 28 // c['pool']
  ck = c['ckks']
  lines = [
      dc.heading('Encrypted (CKKS) and secret-shared (3-party MPC) inference, FMNIST', r,
                 NAME), '',
      f'Square-activation MLP {side * side} -> {c["hidden"]} -> 10 ({p["parameters"]:,} '
      f'parameters) on {c["pool"]}x{c["pool"]}-average-pooled FMNIST, trained '
      f'{c["epochs"]} epoch(s) in the clear. CKKS: TenSEAL, N = {ck["poly_modulus_degree"]}, '
      f'primes {tuple(ck["coeff_mod_bit_sizes"])} bits (log2 Q = '
      f'{sum(ck["coeff_mod_bit_sizes"])}, 128-bit per the HE standard), scale '
      f'2^{ck["global_scale_bits"]}, one ciphertext per query. MPC: MPyC, 3 processes on '
      f'localhost, Shamir t=1 (semi-honest, honest majority), SecFxp({c["mpc"]["bit_length"]}, '
      f'{c["mpc"]["frac_bits"]}), secure argmax; bytes are all parties\' sends. Seconds are '
      'wall time per query on the shared CPU (one process for CKKS: client and server).', '',
      '| setting | test images | accuracy | plaintext acc. (same images) | argmax = plaintext '
      '| max abs logit error (max abs logit) | s per query (median) | bytes per query '
      '| bytes once |',
      '|---|---|---|---|---|---|---|---|---|',
      f'| plaintext (float32) | {p["n"]} | {dc.fmt(p["accuracy"], digits=2)} | - | - | - | - '
      '| - | - |',
      f'| CKKS | {h["n"]} | {dc.fmt(h["accuracy"])} | {dc.fmt(h["plaintext_accuracy"])} | '
      f'{dc.fmt(h["agreement"])} | {h["max_abs_logit_error"]:.1e} ({h["max_abs_logit"]:.1f}) | '
      f'{h["seconds_per_query_median"]:.2f} | {_mb(h["bytes_query"])} up, '
      f'{_mb(h["bytes_reply"])} down | {_mb(h["bytes_public_context"])} (evaluation keys) |',
      f'| MPC (3 parties) | {m["n"]} | {dc.fmt(m["accuracy"])} | '
      f'{dc.fmt(m["plaintext_accuracy"])} | {dc.fmt(m["agreement"])} | '
      f'{m["max_abs_logit_error"]:.1e} ({m["max_abs_logit"]:.1f}) | '
      f'{m["seconds_per_query_median"]:.2f} | {_mb(m["bytes_per_query"])} | '
      f'{_mb(m["bytes_model"])} (weights) |',
      '',
      f'Anchor: {CRYPTONETS}. CKKS errors are against the float64 network; MPC errors '
      f'against the same network on the 2^-{c["mpc"]["frac_bits"]} fixed-point grid. '
      'CryptoNets\' figure is throughput (8192 images in the slots of one ciphertext set); '
      'the figures here are latency (one image per query), measured on far fewer images.']
  return '\n'.join(lines) + '\n'


def headline(r: dict) -> list:
  """README row: accuracy and cost per query of CKKS and MPC inference (variant 'full')."""
  if r.get('variant') != 'full':
    return []
  p, h, m = r['plaintext'], r['inference']['ckks'], r['inference']['mpc']
  return [('Encrypted inference, FMNIST square-activation MLP (cpu, shared): plaintext test '
           'accuracy; CKKS and 3-party MPC predictions equal to plaintext, s and bytes per query',
           f'{100 * p["accuracy"]:.1f}%; CKKS {round(h["agreement"] * h["n"])}/{h["n"]} '
           f'({h["seconds_per_query_median"]:.1f} s, '
           f'{_mb(h["bytes_query"] + h["bytes_reply"])}); MPC '
           f'{round(m["agreement"] * m["n"])}/{m["n"]} ({m["seconds_per_query_median"]:.1f} s, '
           f'{_mb(m["bytes_per_query"])})')]
