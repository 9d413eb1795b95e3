"""Pure HTTP header logic the edges share: content negotiation with ``Accept``."""

from __future__ import annotations

from collections.abc import Sequence

from ._names import parse_header_params


def _parse_accept(accept: str) -> list[tuple[str, str, float]]:
    """The media ranges of ``accept`` with their q-values; never raises.

    A header is the client's to get wrong: a parameter that cannot be read (an unknown
    RFC 8187 charset, a q-value that is not a number in [0, 1]) must not turn into a 500. An
    unreadable extended parameter is left out, and a bad q-value counts as 0.
    """
    ranges = []
    for item in accept.split(","):
        if not item.strip():
            continue
        kind, params = parse_header_params(item)
        maintype, _, subtype = kind.partition("/")
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 0.0
        if not 0 <= quality <= 1:
            quality = 0.0
        ranges.append((maintype, subtype or "*", quality))
    return ranges


def accept_quality(accept: str | None, media_type: str) -> float:
    """The quality ``accept`` gives ``media_type`` (RFC 9110 §12.5.1).

    The most specific matching range decides (``type/subtype`` over ``type/*`` over ``*/*``);
    a missing header accepts everything with quality 1; no matching range means 0.
    """
    if accept is None or not accept.strip():
        return 1.0
    maintype, _, subtype = media_type.lower().partition("/")
    best: tuple[int, float] = (-1, 0.0)
    for range_type, range_subtype, quality in _parse_accept(accept):
        if range_type == maintype and range_subtype == subtype:
            specificity = 2
        elif range_type == maintype and range_subtype == "*":
            specificity = 1
        elif range_type == "*" and range_subtype == "*":
            specificity = 0
        else:
            continue
        if specificity > best[0]:
            best = (specificity, quality)
    return best[1]


def choose(accept: str | None, offers: Sequence[str]) -> str | None:
    """The offer ``accept`` prefers; ties go to the earlier offer; None when none is acceptable."""
    best, best_quality = None, 0.0
    for offer in offers:
        quality = accept_quality(accept, offer)
        if quality > best_quality:
            best, best_quality = offer, quality
    return best
