"""Identity-disjoint splits by a stable hash of a group name (one home for the rule the
real-footage builders share: ``realtalk``, ``videofolder``).

A group (an identity) goes to a split by where ``sha256(salt + ":" + group)`` falls in
[0, 1) against the cumulative split fractions. The rule needs no list of all identities,
so a clip's split never changes when clips of other people are added or removed, and the
same identity always lands in the same split across builds and machines.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Mapping

from avdetect.errors import ConfigError

# train / validation / test; test is the largest held-out part so that it holds real
# clips of several identities even in small corpora.
DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.6, "validation": 0.15, "test": 0.25}
DEFAULT_SALT = "avdetect-splits-v1"
RULE = "sha256(salt + ':' + identity) as a fraction in [0,1) against cumulative fractions"


def hash_fraction(group: str, salt: str = DEFAULT_SALT) -> float:
    """A stable number in [0, 1) for ``group`` (first 8 bytes of the sha256)."""
    digest = hashlib.sha256(f"{salt}:{group}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def _check(fractions: Mapping[str, float]) -> None:
    if not fractions or any(f < 0 for f in fractions.values()):
        raise ConfigError(f"split fractions must be non-negative and non-empty, got "
                          f"{dict(fractions)}")
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"split fractions must sum to 1, got {dict(fractions)} "
                          f"(sum {total})")


def split_of(group: str, fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
             salt: str = DEFAULT_SALT) -> str:
    """The split of a group (identity): the same group always gets the same split."""
    _check(fractions)
    x = hash_fraction(group, salt)
    acc = 0.0
    names = list(fractions)
    for name in names:
        acc += fractions[name]
        if x < acc:
            return name
    return names[-1]            # x within rounding of 1.0


def split_record(groups: Iterable[str], fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
                 salt: str = DEFAULT_SALT) -> dict[str, Any]:
    """What the dataset metadata records about the split: the rule, fractions, salt and the
    sorted identity list of every split."""
    members: dict[str, list[str]] = {name: [] for name in fractions}
    for g in sorted(set(groups)):
        members[split_of(g, fractions, salt)].append(g)
    return {"rule": RULE, "fractions": dict(fractions), "salt": salt, "identities": members}
