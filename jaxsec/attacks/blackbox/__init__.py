"""Black-box evasion attacks (survey §2.4(1)): the attacker only queries the model.

Every attack is a factory with keyword-only hyperparameters that returns the pure function
``attack(query_fn, x, y, key) -> AttackOutput`` (``jaxsec.attacks.base``),
where ``query_fn: x -> scores`` and the attack counts the queries it spends.

Score-based: :func:`square` (Square Attack, Andriushchenko et al., ECCV 2020; L_inf, L2),
:func:`spsa` (Uesato et al., ICML 2018) and :func:`nes` (Ilyas et al., ICML 2018), on
zeroth-order gradient estimates (``estimators``), :func:`simba` (Guo et al., ICML 2019;
pixel basis) and :func:`bandits` (Ilyas, Engstrom & Madry, ICLR 2019; time and tiling
priors, L_inf, L2).

Decision-based, minimal-norm (labels only): :func:`hop_skip_jump` (below),
:func:`boundary_attack` (Brendel, Rauber & Bethge, ICLR 2018; L2) and :func:`rays` (RayS,
Chen & Gu, KDD 2020; L_inf).
"""
from jaxsec.attacks.blackbox.acre import ACREResult, acre_boolean, acre_continuous
from jaxsec.attacks.blackbox.bandits import bandits
from jaxsec.attacks.blackbox.boundary import boundary_attack
from jaxsec.attacks.blackbox.nes import nes
from jaxsec.attacks.blackbox.rays import rays
from jaxsec.attacks.blackbox.simba import simba
from jaxsec.attacks.blackbox.spsa import spsa
from jaxsec.attacks.blackbox.square import square

__all__ = ['square', 'spsa', 'nes', 'simba', 'bandits', 'boundary_attack', 'rays']

# Decision-based: hop_skip_jump (HopSkipJumpAttack, Chen, Jordan & Wainwright, S&P 2020;
# L2, L_inf; query_fn: x -> labels). Transfer: substitute_training (Papernot et al.,
# AsiaCCS 2017, Jacobian-based dataset augmentation; oracle labels only) and
# transfer_attack (any white-box attack crafted on the substitute, scored on the oracle).
from jaxsec.attacks.blackbox.hopskipjump import hop_skip_jump
from jaxsec.attacks.blackbox.substitute import (jacobian_augmentation, substitute_training,
                                                transfer_attack)

__all__ += ['hop_skip_jump', 'substitute_training', 'jacobian_augmentation',
            'transfer_attack']

# Reverse engineering (host code, sequential membership queries): ACRE learning of linear
# classifiers (Lowd & Meek, KDD 2005): acre_continuous ((1+eps)-approximate minimal L1
# cost), acre_boolean (2-approximate minimal Hamming cost); ACREResult(x, cost, queries,
# info), not AttackOutput (imported above).
__all__ += ['ACREResult', 'acre_boolean', 'acre_continuous']

# Genetic programming over structured discrete inputs (host code, batched queries): EvadeML
# (Xu, Qi & Evans, NDSS 2016) on binary features with a functionality oracle; returns
# EvadeMLResult(x, success, generations, queries, oracle_calls, info), not AttackOutput.
from jaxsec.attacks.blackbox.evademl import EvadeMLResult, evademl_gp  # noqa: E402

__all__ += ['EvadeMLResult', 'evademl_gp']
