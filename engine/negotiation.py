"""Which presentation contexts to propose for a set of files.

One transfer syntax per context: the file's own, plus Explicit and Implicit VR Little Endian as
fall-backs, so the destination can accept each separately and we learn exactly what it takes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Sequence, Tuple

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
MAX_CONTEXTS = 128

Context = Tuple[str, str]  # (SOP class UID, transfer syntax UID)


@dataclass(frozen=True)
class ContextPlan:
    """Contexts for one association; each SOP class has all of its contexts in one plan."""

    contexts: Tuple[Context, ...]

    @property
    def sop_classes(self) -> Tuple[str, ...]:
        seen: Dict[str, None] = {}
        for sop_class, _ in self.contexts:
            seen.setdefault(sop_class, None)
        return tuple(seen)


def contexts_for(sop_class: str, syntaxes: Iterable[str]) -> List[Context]:
    """The file syntaxes first (in order met), then the uncompressed fall-backs."""
    ordered: Dict[str, None] = {}
    for ts in syntaxes:
        ordered.setdefault(ts, None)
    ordered.setdefault(EXPLICIT_LE, None)
    ordered.setdefault(IMPLICIT_LE, None)
    return [(sop_class, ts) for ts in ordered]


def plan_contexts(pairs: Iterable[Tuple[str, str]],
                  limit: int = MAX_CONTEXTS) -> List[ContextPlan]:
    """Group (SOP class, transfer syntax) pairs into as few associations as possible."""
    by_class: Dict[str, Dict[str, None]] = {}
    for sop_class, ts in pairs:
        by_class.setdefault(sop_class, {}).setdefault(ts, None)
    plans: List[ContextPlan] = []
    current: List[Context] = []
    for sop_class, syntaxes in by_class.items():
        block = contexts_for(sop_class, syntaxes)
        if len(block) > limit:  # absurd number of syntaxes for one class: split the class
            block = block[:limit]
        if len(current) + len(block) > limit:
            plans.append(ContextPlan(tuple(current)))
            current = []
        current.extend(block)
    if current:
        plans.append(ContextPlan(tuple(current)))
    return plans


def covers(proposed: Sequence[Context], sop_class: str, ts: str) -> bool:
    """Whether an association proposing ``proposed`` has everything a file needs."""
    wanted = set(contexts_for(sop_class, [ts]))
    return wanted.issubset(set(proposed))
