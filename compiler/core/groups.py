"""Pass 2b: turn channel labels into the PruningSpace (ChannelGroups and their places).

Components of the union-find are the pruning units. Units with the same birth producers
(and the same split piece) form one group. A group is ordered, sized and checked at its
primary member, the output of its earliest producer.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch.fx as fx

from .labels import Labels
from .propagate import Propagator
from .space import ChannelGroup, Member, Place, PruningSpace, lcm


def analyze(gm: fx.GraphModule, channel_step: int = 1) -> PruningSpace:
    """Find every ChannelGroup of a lowered graph. `channel_step` is the hardware multiple
    that channel counts should move in (8 suits AVX2 and tensor cores); 1 allows any count."""
    prop = Propagator(gm).run()
    st = prop.st
    order = {n.name: i for i, n in enumerate(gm.graph.nodes)}
    root = np.array([st.find(e) for e in range(len(st.parent))], dtype=np.int64)

    births: dict[int, set[str]] = defaultdict(set)
    tags: dict[int, set] = defaultdict(set)
    reason: dict[int, str] = {}
    for e, r in enumerate(root.tolist()):
        births[r].add(st.birth[e])
        tags[r].update(st.tags.get(e, ()))
        if e in st.frozen and r not in reason:
            reason[r] = st.frozen[e]

    places: dict[str, tuple[int, np.ndarray]] = {}
    for node, lab in prop.labels.items():
        if isinstance(lab, Labels) and lab.dim is not None:
            places[node.name] = (lab.dim, np.where(lab.ids >= 0, root[np.maximum(lab.ids, 0)], -1))

    by_sig: dict[tuple, list[int]] = defaultdict(list)
    for r in births:
        by_sig[(frozenset(births[r]), frozenset(tags[r]))].append(r)

    drafts = []
    for (bset, _), roots in by_sig.items():
        primary = min(bset, key=lambda b: order[b])
        if primary not in places:
            continue  # elements that never reached a tensor place (e.g. an unused output)
        drafts.append(_draft(primary, roots, places[primary][1], reason))
    drafts.sort(key=lambda d: (order[d["primary"]], d["first"]))

    _apply_blocks(drafts, prop.blocks, root)

    groups: list[ChannelGroup] = []
    unit_of_root = np.full(len(root), -1, dtype=np.int64)
    seen: dict[str, int] = defaultdict(int)
    start = 0
    for d in drafts:
        k = seen[d["primary"]]
        seen[d["primary"]] += 1
        gid = d["primary"] if k == 0 else f"{d['primary']}.{k}"
        units = d["roots"]
        unit_of_root[units] = np.arange(start, start + len(units))
        prunable = d["reason"] is None and len(units) > 1
        why = d["reason"] if d["reason"] else (None if prunable else "a single pruning unit")
        gran = lcm(d["unit"] * d["blocks"], channel_step) if prunable else d["size"]
        groups.append(ChannelGroup(
            id=gid, size=d["size"], unit=d["unit"], unit_start=start, units=len(units),
            channel_step=gran, prunable=prunable, reason=why, blocks=d["blocks"],
            unit_blocks=d["unit_blocks"],
        ))
        start += len(units)

    space_places = {name: Place(dim, np.where(c >= 0, unit_of_root[np.maximum(c, 0)], -1))
                    for name, (dim, c) in places.items()}
    _attach_members(groups, space_places)
    return PruningSpace(groups, space_places)


def _draft(primary: str, roots: list[int], at_primary: np.ndarray, reason: dict[int, str]) -> dict:
    """Order a group's units by position at the primary member and check they are even."""
    rs = np.array(roots)
    first: dict[int, int] = {}
    count: dict[int, int] = defaultdict(int)
    for pos, r in enumerate(at_primary.tolist()):
        first.setdefault(r, pos)
        count[r] += 1
    rs = np.array(sorted(rs.tolist(), key=lambda r: first.get(r, 1 << 60)))
    mults = {count.get(int(r), 0) for r in rs}
    why = next((reason[int(r)] for r in rs if int(r) in reason), None)
    size = int(sum(count.get(int(r), 0) for r in rs))
    if 0 in mults or len(mults) != 1:
        why = why or "its channels are spread unevenly over its producer's output"
    unit = mults.pop() if len(mults) == 1 else size
    return {"primary": primary, "roots": rs, "unit": unit, "size": size, "reason": why,
            "first": first.get(int(rs[0]), 0), "blocks": 1, "unit_blocks": None}


def _apply_blocks(drafts: list[dict], constraints: list[tuple[str, np.ndarray, int]], root: np.ndarray) -> None:
    """A grouped conv (not depthwise) keeps its group count: every block of its input and
    output must keep the same number of channels, so each touched group is split in blocks."""
    where: dict[int, dict] = {}
    for d in drafts:
        for r in d["roots"].tolist():
            where[r] = d
    for desc, ids, g in constraints:
        per = len(ids) // g
        comp = np.where(ids >= 0, root[np.maximum(ids, 0)], -1)
        block_of: dict[int, set[int]] = defaultdict(set)
        for pos, r in enumerate(comp.tolist()):
            if r >= 0:
                block_of[r].add(pos // per)
        for d in {id(where[r]): where[r] for r in block_of if r in where}.values():
            units = d["roots"].tolist()
            blocks = [block_of.get(r, set()) for r in units]
            counts = np.bincount([min(b) for b in blocks if len(b) == 1], minlength=g)
            if any(len(b) != 1 for b in blocks) or len(set(counts.tolist())) != 1:
                d["reason"] = d["reason"] or f"the grouped conv at the {desc} splits it unevenly"
                continue
            assignment = [min(b) for b in blocks]
            if d["unit_blocks"] is not None and d["unit_blocks"] != assignment:
                d["reason"] = d["reason"] or f"two grouped convs split it differently ({desc})"
                continue
            d["blocks"], d["unit_blocks"] = g, assignment


def _attach_members(groups: list[ChannelGroup], places: dict[str, Place]) -> None:
    owner = np.zeros(sum(g.units for g in groups), dtype=np.int64)
    for i, g in enumerate(groups):
        owner[g.unit_start:g.unit_start + g.units] = i
    for name, place in places.items():
        real = np.nonzero(place.units >= 0)[0]
        if not len(real):
            continue
        gi = owner[place.units[real]]
        for k in np.unique(gi).tolist():
            groups[k].members.append(Member(name, place.dim, real[gi == k].tolist()))
