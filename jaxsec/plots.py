"""Plots rendered from results (matplotlib, Agg backend; written atomically)."""
from __future__ import annotations

import io as _io
from typing import Mapping, Sequence

import numpy as np

from jaxsec import io as jio


def _fig():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(fig, path):
  buf = _io.BytesIO()
  fig.savefig(buf, format='png', dpi=110, bbox_inches='tight')
  jio.write_bytes_atomic(path, buf.getvalue())


def accuracy_vs_eps(path: str, eps: Sequence[float], curves: Mapping[str, Sequence[float]],
                    title: str = '') -> None:
  plt = _fig()
  fig, ax = plt.subplots(figsize=(5, 3.6))
  for name, acc in curves.items():
    ax.plot(eps, 100 * np.asarray(acc), marker='o', label=name)
  ax.set_xlabel('eps (L_inf)')
  ax.set_ylabel('accuracy (%)')
  ax.set_ylim(0, 100)
  ax.grid(alpha=0.3)
  ax.legend()
  ax.set_title(title, fontsize=9)
  _save(fig, path)
  plt.close(fig)


def image_grid(path: str, rows: Sequence[np.ndarray], preds: Sequence[np.ndarray], *,
               row_titles: Sequence[str], labels: np.ndarray,
               class_names: Sequence[str]) -> None:
  """Rows of images with their predicted label (red when it differs from ``labels``)."""
  plt = _fig()
  n_rows, n_cols = len(rows), rows[0].shape[0]
  fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.3 * n_cols, 1.5 * n_rows),
                           squeeze=False)
  for r in range(n_rows):
    for c in range(n_cols):
      ax = axes[r, c]
      img = np.asarray(rows[r][c])
      ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap='gray', vmin=0, vmax=1)
      p = int(preds[r][c])
      ax.set_title(class_names[p][:10], fontsize=7,
                   color='black' if p == int(labels[c]) else 'red')
      ax.set_xticks([])
      ax.set_yticks([])
    axes[r, 0].set_ylabel(row_titles[r], fontsize=7)
  _save(fig, path)
  plt.close(fig)


def roc_loglog(path: str, curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
               title: str = '') -> None:
  """Log-log ROC curves ``{name: (fpr, tpr)}`` (membership inference convention)."""
  plt = _fig()
  fig, ax = plt.subplots(figsize=(4.2, 4))
  for name, (fpr, tpr) in curves.items():
    ax.loglog(np.maximum(fpr, 1e-5), np.maximum(tpr, 1e-5), label=name)
  ax.plot([1e-5, 1], [1e-5, 1], 'k--', lw=0.8)
  ax.set_xlim(1e-5, 1)
  ax.set_ylim(1e-5, 1)
  ax.set_xlabel('false positive rate')
  ax.set_ylabel('true positive rate')
  ax.legend(fontsize=7)
  ax.set_title(title, fontsize=9)
  _save(fig, path)
  plt.close(fig)


def heatmaps(path: str, panels: Mapping[str, np.ndarray], rows: Sequence[str],
             cols: Sequence[str], *, xlabel: str = '', ylabel: str = '',
             title: str = '') -> None:
  """One annotated heat map per panel (values in [0, 1], shown in %), side by side on a
  shared 0-100% colour scale: e.g. source x target success-rate matrices."""
  plt = _fig()
  n = len(panels)
  fig, axes = plt.subplots(1, n, figsize=(2.6 * n + 0.6, 2.9), squeeze=False)
  im = None
  for ax, (name, m) in zip(axes[0], panels.items(), strict=True):
    m = 100 * np.asarray(m, float)
    im = ax.imshow(m, vmin=0, vmax=100, cmap='viridis')
    for i in range(m.shape[0]):
      for j in range(m.shape[1]):
        ax.text(j, i, f'{m[i, j]:.0f}', ha='center', va='center', fontsize=7,
                color='white' if m[i, j] < 60 else 'black')
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha='right', fontsize=7)
    ax.set_yticks(range(len(rows)), rows if ax is axes[0][0] else [], fontsize=7)
    ax.set_title(name, fontsize=8)
    ax.set_xlabel(xlabel, fontsize=7)
  axes[0][0].set_ylabel(ylabel, fontsize=7)
  if im is not None:
    fig.colorbar(im, ax=list(axes[0]), fraction=0.02, label='%')
  fig.suptitle(title, fontsize=9)
  _save(fig, path)
  plt.close(fig)
