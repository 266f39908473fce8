"""Variants: the grid of a family's axis values, seeded sampling, and stable variant ids."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from dataclasses import dataclass
from typing import Any

from ..errors import TemplateError
from .templates import TemplateFamily


@dataclass(frozen=True)
class Variant:
    """One concrete prompt format: a family with one value chosen on every axis."""

    id: str
    family: TemplateFamily
    values: dict[str, Any]

    def describe(self) -> str:
        """Axis values as a short human-readable string."""
        return ", ".join(f"{k}={v!r}" for k, v in self.values.items())


# axis values that leave the prompt as it would be without the axis: left out of the id, so that a
# variant run with `--noise` has the same id, for its clean copy, as in a run without it
NEUTRAL = {"noise": "none"}


def variant_id(family_name: str, values: dict[str, Any]) -> str:
    """Stable id from the family name and its axis values: same on every run and machine."""
    values = {k: v for k, v in values.items() if k not in NEUTRAL or v != NEUTRAL[k]}
    canonical = json.dumps({"family": family_name, "axes": values}, sort_keys=True, ensure_ascii=True)
    return f"{family_name}.{hashlib.sha256(canonical.encode()).hexdigest()[:8]}"


def expand(family: TemplateFamily) -> list[Variant]:
    """Every combination of axis values, in declared axis order."""
    names = list(family.axes)
    variants = []
    for combo in itertools.product(*(family.axes[n] for n in names)):
        values = dict(zip(names, combo))
        variants.append(Variant(variant_id(family.name, values), family, values))
    return variants


def with_noise(variants: list[Variant], specs: list[str]) -> list[Variant]:
    """Every variant once clean and once under each noise spec (a `noise` axis added after sampling, so
    that each sampled prompt is seen at every noise level)."""
    if not specs:
        return variants
    out = []
    for v in variants:
        if "noise" in v.values:
            raise TemplateError(f"{v.family.path}: family '{v.family.name}' declares its own `noise` axis; drop it "
                                "or drop --noise")
        for spec in ["none", *specs]:
            values = {**v.values, "noise": spec}
            out.append(Variant(variant_id(v.family.name, values), v.family, values))
    return out


def expand_all(families: list[TemplateFamily], max_variants: int | None = None, seed: int = 0) -> list[Variant]:
    """All variants of all families; with `max_variants`, a seeded sample spread evenly over families."""
    per_family = [expand(f) for f in families]
    ids: dict[str, Variant] = {}
    for variant in itertools.chain.from_iterable(per_family):
        if variant.id in ids:
            raise TemplateError(
                f"{variant.family.path}: variant id {variant.id} collides with one from "
                f"{ids[variant.id].family.path}; rename one of the families"
            )
        ids[variant.id] = variant
    if max_variants is None or max_variants >= len(ids):
        return list(ids.values())
    if max_variants < 1:
        raise TemplateError(f"--max-variants must be at least 1 (got {max_variants})")
    # shuffle each family with its own seeded generator, then deal round-robin across families
    shuffled = []
    for family, variants in zip(families, per_family):
        order = sorted(variants, key=lambda v: v.id)
        random.Random(f"{seed}:{family.name}").shuffle(order)
        shuffled.append(order)
    chosen: list[Variant] = []
    for round_ in itertools.zip_longest(*shuffled):
        for variant in round_:
            if variant is not None and len(chosen) < max_variants:
                chosen.append(variant)
    keep = {v.id for v in chosen}
    return [v for v in ids.values() if v.id in keep]  # back in declared order
