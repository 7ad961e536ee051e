"""The golden pairs of a combined ensemble: the pairs every member carries (same texts, same
token ids), each with the members' own torch fp32 references in output order, at the widest of
the members' tolerances. Members trained together (``rmserve train --ensemble``) share their
validation pairs, so they share every golden pair; members that share none, or a member without
golden pairs, give an ensemble without them."""

from __future__ import annotations

from collections.abc import Sequence

from rmserve.artifact.golden import GoldenPair, GoldenSet, GoldenTolerance


def _key(pair: GoldenPair) -> tuple[str, str, tuple[int, ...]]:
    return pair.prompt, pair.response, tuple(pair.input_ids)


def ensemble_golden(members: Sequence[GoldenSet | None]) -> GoldenSet | None:
    if not members or any(m is None or m.members for m in members):
        return None
    sets = [m for m in members if m is not None]
    by_key = [{_key(p): p for p in m.pairs} for m in sets]
    common = [p for p in sets[0].pairs if all(_key(p) in pairs for pairs in by_key[1:])]
    if not common:
        return None
    tolerances = {m.tolerance for m in sets}
    tolerance = (
        tolerances.pop()
        if len(tolerances) == 1
        else GoldenTolerance(
            atol=max(t.atol for t in tolerances),
            rtol=max(t.rtol for t in tolerances),
            basis="the widest of the members' bounds",
        )
    )
    pairs = [
        p.model_copy(update={"reward": [float(pairs[_key(p)].reward) for pairs in by_key]})  # type: ignore[arg-type]
        for p in common
    ]
    return GoldenSet(
        reference=sets[0].reference, dtype=sets[0].dtype, tolerance=tolerance, pairs=pairs
    )
