"""A study for the launcher's tests: ``run(config, workdir)`` writes and returns a JSON.

With ``config.crash_first`` set, the first attempt of a seed-1 point fails: by raising
(x < 1) or by killing its worker process (x >= 1); the next attempt succeeds. With ``config.xs`` (a tuple) the study also returns
one row per value of x, as a vectorised axis does.
"""
import os
import time

from jaxsec import io as jio


def run(config, workdir):
  os.makedirs(workdir, exist_ok=True)
  marker = os.path.join(workdir, 'attempted')
  if config.crash_first and config.seed == 1 and not os.path.exists(marker):
    open(marker, 'w').close()
    if config.x < 1:
      raise RuntimeError(f'planned failure of seed={config.seed} x={config.x}')
    os._exit(3)  # the worker process dies  # pylint: disable=protected-access
  time.sleep(config.sleep_s)
  def at(x):
    return {'loss': (x - 1.0) ** 2 + config.seed, 'nested': {'score': 2.0 * x}}
  result = {**at(config.x), 'label': f'{config.model}-{config.seed}', 'pid': os.getpid()}
  if config.xs:  # the vectorised axis x: one row per value (launch.points.VECTORIZED)
    result['vectorized'] = {'axes': ['x'], 'rows': [{'x': x, **at(x)} for x in config.xs]}
  jio.write_json_atomic(os.path.join(workdir, 'results.json'), result)
  return result
