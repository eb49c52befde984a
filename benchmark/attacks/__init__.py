"""The attacks of the protocol, each a class taking a threat model and its settings (docs/attacks.md)."""
from .apgd import APGD
from .base import Attack, AttackOutput, BoundsError, FixedBudgetAttack, MinimumNormAttack, RunOutput
from .fab import FAB
from .pgd import FGSM, PGD
from .square import Square

__all__ = [
    "Attack", "FixedBudgetAttack", "MinimumNormAttack", "AttackOutput", "RunOutput", "BoundsError",
    "APGD", "FAB", "Square", "PGD", "FGSM",
]
