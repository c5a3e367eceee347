"""Black-box evasion attacks (survey §2.4(1)): the attacker only queries the model.

Every attack is a factory with keyword-only hyperparameters that returns the pure function
``attack(query_fn, x, y, key) -> x_adv`` (or ``AttackOutput`` with ``return_info=True``),
where ``query_fn: x -> scores`` and the attack counts the queries it spends.

Score-based: :func:`square` (Square Attack, Andriushchenko et al., ECCV 2020; L_inf, L2).
"""
from jaxsec.attacks.blackbox.square import square

__all__ = ['square']
