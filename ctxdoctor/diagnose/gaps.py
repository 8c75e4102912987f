"""Group flagged orphans into propagation gaps: one pattern per place in the code to fix."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from ctxdoctor.findings import Gap, Orphan
from ctxdoctor.fixes import fix_for

#: Examples kept per gap for the report's trees.
EXAMPLES = 3


def _merge_ambiguous(buckets: dict[tuple[str, str, str, str], list[Orphan]]) -> None:
    """A pattern made only of orphans whose parent is ambiguous joins the main pattern of the
    same orphan span: a root started among many busy spans may be pinned on the wrong one, and
    that must not read as a second place in the code to fix."""
    main: dict[tuple[str, str], tuple[str, str, str, str]] = {}
    for key, _members in sorted(buckets.items(), key=lambda kv: -len(kv[1])):
        main.setdefault((key[0], key[2]), key)
    for key in list(buckets):
        home = main[(key[0], key[2])]
        if key != home and all(o.ambiguous for o in buckets[key]):
            buckets[home].extend(buckets.pop(key))


def group_gaps(orphans: Sequence[Orphan], group_sizes: dict[tuple[str, str], int]) -> list[Gap]:
    """Patterns (service, parent name -> orphan name, boundary), worst first.

    The parent's name is taken from the orphan's named parent; ambiguous orphans still vote
    for a name because all their candidates usually share it.
    """
    buckets: dict[tuple[str, str, str, str], list[Orphan]] = defaultdict(list)
    for o in orphans:
        if o.parent is None:
            continue
        buckets[(o.span.unit.service, o.parent.name, o.span.name, o.boundary.value)].append(o)
    _merge_ambiguous(buckets)
    gaps = []
    for (service, parent_name, orphan_name, _), members in buckets.items():
        members.sort(key=lambda o: (-o.confidence * o.parent_confidence, o.span.start))
        first = members[0]
        lang = first.span.unit.language or (first.parent.unit.language if first.parent else None)
        gaps.append(
            Gap(
                service=service,
                parent_name=parent_name,
                orphan_name=orphan_name,
                boundary=first.boundary,
                occurrences=len(members),
                roots_with_name=group_sizes.get((service, orphan_name), len(members)),
                confidence=sum(o.confidence for o in members) / len(members),
                runtime=lang or "unknown",
                fix=fix_for(lang, first.boundary),
                examples=tuple(members[:EXAMPLES]),
            )
        )
    gaps.sort(key=lambda g: (-g.occurrences * g.confidence, g.service, g.orphan_name))
    return gaps
