"""Cross-validation folds: seeded, stratified by the classes each image holds, and grouped on request.

Each image holds a set of classes (or carries an image label). Folds are drawn so that every class's images
spread over the folds as evenly as whole groups allow, the folds hold about the same number of images, and
the images of one group (``group_by``: a regex on the sample name, e.g. one CamVid drive, one patient) never
straddle two folds. The assignment is iterative stratification (Sechidis, Tsoumakas and Vlahavas, 2011) over
groups: the groups holding the rarest classes are placed first, each into the fold that so far holds the
fewest images of its rarest class relative to that fold's share, then the fewest images, among the folds it
does not push past their share by a whole group (so fold sizes stay within one group of each other). scikit-learn's
``StratifiedGroupKFold`` does the like for one label per sample only; an image here holds several classes.
The result depends only on the names, what they hold, the groups and the seed: not on file-system order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch

from lightning_seg.errors import ConfigError


def group_keys(names: Sequence[str], pattern: str | None) -> list[str]:
    """Each name's group under ``pattern`` (searched in the name; the first capture group if it has one,
    else the whole match); each name its own group when ``pattern`` is None.

    Raises ConfigError in one line for a pattern that does not compile or a name it does not match."""
    if pattern is None:
        return list(names)
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ConfigError(f"data.group_by {pattern!r} is not a regular expression: {error}") from error
    keys = []
    for name in names:
        match = compiled.search(name)
        if match is None:
            raise ConfigError(
                f"data.group_by {pattern!r} does not match the sample {name!r}; every sample needs a group "
                r"(e.g. '^([^_]+)_' for 'drive_frame' names)"
            )
        keys.append(match.group(1) if compiled.groups else match.group(0))
    return keys


def assign_folds(presence: torch.Tensor, groups: Sequence[str], folds: int, seed: int) -> list[int]:
    """The fold (0..folds-1) of each of N samples.

    Args:
        presence: bool N×C, whether sample i holds class (or image label) c.
        groups: N group keys (:func:`group_keys`): samples of one group get one fold.
        folds: k >= 2.
        seed: ties between equally good choices are broken by a permutation drawn from it.

    Raises ConfigError in one line when there are fewer groups than folds.
    """
    if folds < 2:
        raise ConfigError(f"data.folds must be at least 2, got {folds}")
    names = sorted(set(groups))
    if len(names) < folds:
        what = "groups (data.group_by)" if len(names) < len(groups) else "samples"
        raise ConfigError(f"{len(names)} {what} cannot fill {folds} folds; use fewer folds or more data")
    index = {name: i for i, name in enumerate(names)}
    member = torch.tensor([index[g] for g in groups], dtype=torch.int64)
    presence = presence.to(torch.int64)
    # per group: its images and, per class, how many of them hold it
    sizes = torch.bincount(member, minlength=len(names))
    holds = torch.zeros(len(names), presence.shape[1], dtype=torch.int64).index_add_(0, member, presence)
    totals = holds.sum(0)
    rarity = torch.where(holds > 0, totals.expand_as(holds), torch.iinfo(torch.int64).max)
    rarest = rarity.argmin(1)  # the group's rarest class (any class when it holds none)
    has_class = holds.gt(0).any(1)
    generator = torch.Generator().manual_seed(seed)
    shuffle = torch.randperm(len(names), generator=generator).tolist()
    fold_rank = torch.randperm(folds, generator=generator).tolist()  # tie order among folds
    order = sorted(
        range(len(names)),
        key=lambda g: (
            not bool(has_class[g]),
            int(rarity[g].min()) if has_class[g] else 0,
            -int(sizes[g]),
            shuffle[g],
        ),
    )
    fold_holds = torch.zeros(folds, presence.shape[1], dtype=torch.int64)
    fold_sizes = [0] * folds
    target_size = len(groups) / folds
    # no fold grows past its share by a whole group: the sizes stay within one group of each other
    cap = math.ceil(target_size) + int(sizes.max()) - 1
    fold_of_group = [0] * len(names)
    for g in order:
        c = int(rarest[g])
        share = max(float(totals[c]) / folds, 1e-9)
        held = bool(has_class[g])
        room = [f for f in range(folds) if fold_sizes[f] + int(sizes[g]) <= cap] or list(range(folds))
        # an empty fold first (every fold gets a group), then the class's balance, then the sizes
        costs = {
            f: (
                fold_sizes[f] > 0,
                float(fold_holds[f, c]) / share if held else 0.0,
                fold_sizes[f] / target_size,
            )
            for f in room
        }
        best = min(room, key=lambda f: (*costs[f], fold_rank[f]))
        fold_of_group[g] = best
        fold_holds[best] += holds[g]
        fold_sizes[best] += int(sizes[g])
    return [fold_of_group[int(m)] for m in member]
