"""Attacks: evasion (white-box), black-box, poisoning, privacy.

White-box evasion attacks are re-exported at this level: ``jaxsec.attacks.pgd(...)``.
"""
from jaxsec.attacks import base
from jaxsec.attacks.base import AttackOutput, FittedAttack
from jaxsec.attacks.evasion import *  # noqa: F401,F403  (curated by evasion.__all__)
