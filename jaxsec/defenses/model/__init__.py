"""Model defenses against backdoors: they inspect or repair a *trained* model.

A model defense takes the suspect ``logits_fn`` (detection) or ``apply_fn`` and ``params``
(repair) and clean data the defender holds, and returns a verdict or repaired ``params``:

* :mod:`neural_cleanse` -- Neural Cleanse (Wang et al., S&P 2019): per-label minimal trigger
  reverse-engineering, the MAD anomaly index of the masks' L1 norms (index > 2 = infected
  label), and repair by unlearning the reversed trigger.
* :mod:`fine_pruning` -- fine-pruning (Liu, Dolan-Gavitt & Garg, RAID 2018): prune the units
  dormant on clean data, then fine-tune with the pruned units held at zero.

Training-set backdoor detectors (activation clustering, spectral signatures) are data
defenses (:mod:`jaxsec.defenses.data`); the input-level detector STRIP is an inference
defense (:mod:`jaxsec.defenses.inference.strip`).
"""
from jaxsec.defenses.model import fine_pruning
from jaxsec.defenses.model import neural_cleanse
from jaxsec.defenses.model.fine_pruning import (activation_order, dormant_units, fine_prune,
                                                prune)
# Neural Cleanse's detect / stamp keep their module's names and are re-exported prefixed.
from jaxsec.defenses.model.neural_cleanse import (NeuralCleanseResult, ReversedTriggers,
                                                  anomaly_index, reverse_triggers, unlearn)
from jaxsec.defenses.model.neural_cleanse import detect as neural_cleanse_detect
from jaxsec.defenses.model.neural_cleanse import stamp as neural_cleanse_stamp

__all__ = ['fine_pruning', 'neural_cleanse',
           'activation_order', 'dormant_units', 'fine_prune', 'prune',
           'NeuralCleanseResult', 'ReversedTriggers', 'anomaly_index',
           'neural_cleanse_detect', 'neural_cleanse_stamp', 'reverse_triggers', 'unlearn']
