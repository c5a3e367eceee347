"""Seeds x widths of the main job (smoke variant by default: pass --set via a copy)."""


def get_hyper(h):
  return h.product([
      h.fixed('experiment', 'main'),
      h.fixed('variant', 'full'),
      h.sweep('config.seed', [0, 1, 2]),
      h.sweep('config.num_epochs', [2, 4]),
  ])
