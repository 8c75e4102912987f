"""Group flagged orphans into propagation gaps: one pattern per place in the code to fix."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from ctxdoctor.diagnose.orphans import shape
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


def _name(names: set[str], shaped: str) -> str:
    """The one name the members share, else the shape they share ("handles item #")."""
    return next(iter(names)) if len(names) == 1 else shaped


def group_gaps(orphans: Sequence[Orphan], group_sizes: dict[tuple[str, str], int]) -> list[Gap]:
    """Patterns (service, parent name -> orphan name, boundary), worst first.

    Names are compared by shape (``orphans.shape``: numbers and ids replaced), so that a test
    case or a batch item that carries its item in its name ("handles item 7") is one place in
    the code to fix, not one gap per item. The parent's name is taken from the orphan's named
    parent; ambiguous orphans still vote for a name because all their candidates usually share it.
    """
    buckets: dict[tuple[str, str, str, str], list[Orphan]] = defaultdict(list)
    for o in orphans:
        if o.parent is None:
            continue
        buckets[(o.span.unit.service, shape(o.parent.name), shape(o.span.name), o.boundary.value)].append(o)
    _merge_ambiguous(buckets)
    by_shape: dict[tuple[str, str], int] = defaultdict(int)
    for (service, name), n in group_sizes.items():
        by_shape[(service, shape(name))] += n
    gaps = []
    for (service, parent_shape, orphan_shape, _), members in buckets.items():
        members.sort(key=lambda o: (-o.confidence * o.parent_confidence, o.span.start))
        first = members[0]
        lang = first.span.unit.language or (first.parent.unit.language if first.parent else None)
        gaps.append(
            Gap(
                service=service,
                parent_name=_name({o.parent.name for o in members if o.parent is not None}, parent_shape),
                orphan_name=_name({o.span.name for o in members}, orphan_shape),
                boundary=first.boundary,
                occurrences=len(members),
                roots_with_name=by_shape.get((service, orphan_shape), len(members)),
                confidence=sum(o.confidence for o in members) / len(members),
                runtime=lang or "unknown",
                fix=fix_for(lang, first.boundary),
                examples=tuple(members[:EXAMPLES]),
            )
        )
    gaps.sort(key=lambda g: (-g.occurrences * g.confidence, g.service, g.orphan_name))
    return gaps
