"""Which queued work the engine runs next: interactive work first, bulk work in a bounded share.

Interactive work (a stream's finals and partials) runs ahead of bulk work (files, long audio)
that arrived earlier. While both wait, bulk work still gets `bulk_share` of the engine time
(deficit accounting, as in deficit round robin), so it is never starved. A bulk engine call
holds at most `bulk_batch_size` windows: on engines that run a batch whole (CTranslate2), an
interactive final that arrives during a bulk call waits at most for that one small call.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from whisperwire.server.runner import Priority


class Queued(Protocol):
    """A queued window: its priority, its arrival number, and which calls it may share."""

    @property
    def priority(self) -> Priority: ...
    @property
    def seq(self) -> int: ...
    @property
    def key(self) -> Hashable: ...


Q = TypeVar("Q", bound=Queued)


@dataclass
class QueuePolicy:
    max_batch_size: int
    bulk_batch_size: int
    bulk_share: float = 0.2
    interactive_first: bool = True  # False: one queue in arrival order (finals before partials)
    _bulk_owed: float = field(default=0.0, init=False)  # engine seconds bulk is owed
    _contended: bool = field(default=False, init=False)  # the last pick had both kinds waiting

    def next_batch(self, live: Sequence[Q]) -> list[Q]:
        """The work of the next engine call, from queued work that is still wanted."""
        if not self.interactive_first:
            return _lead_group(self.ordered(live), self.max_batch_size)
        interactive = sorted((w for w in live if w.priority.interactive), key=_urgency)
        bulk = sorted((w for w in live if not w.priority.interactive), key=_urgency)
        self._contended = bool(interactive and bulk)
        if bulk and (not interactive or self._bulk_owed > 0):
            return _lead_group(bulk, self.bulk_batch_size)
        return _lead_group(interactive, self.max_batch_size)

    def ordered(self, live: Sequence[Q]) -> list[Q]:
        """Queued work most urgent first (in arrival order when interactive_first is off)."""
        return sorted(live, key=_urgency if self.interactive_first else _arrival)

    def ran(self, batch: Sequence[Queued], seconds: float) -> None:
        """Account an engine call of `batch` that took `seconds`."""
        if not self._contended:
            self._bulk_owed = 0.0  # no banking: a share is owed only while both kinds wait
        elif batch[0].priority.interactive:
            self._bulk_owed += seconds * self.bulk_share / (1 - self.bulk_share)
        else:
            self._bulk_owed -= seconds


def _urgency(work: Queued) -> tuple[int, int]:
    return work.priority, work.seq


def _arrival(work: Queued) -> tuple[bool, int]:
    """Arrival order, but a stream's partial after everything else (the old single queue)."""
    return work.priority is Priority.PARTIAL, work.seq


def _lead_group(ordered: list[Q], size: int) -> list[Q]:
    """The first item and the next ones that may share its engine call, up to `size`."""
    key = ordered[0].key
    return [w for w in ordered if w.key == key][:size]
