"""Step mode's admission policy: which queued windows join the running decode at the next step.

Between two advances of an engine with in-flight batching (engine.StepBatcher), the scheduler
asks this policy which queued windows join. Finals come first and join at once, by themselves
(others join at the next advance, never held two advances in a row), and a sixteenth of the
slots stays free for them alone, so a push-to-talk release never waits for a slot behind
partials and bulk windows that keep the engine full. Partials and bulk windows join in groups
(each admission costs an encoder batch) or after HOLD_ROUNDS advances; bulk holds at most its
slots, all but an eighth unless `bulk_slots` says otherwise. While windows decode, at most
`joins_per_step` of them join at one advance, an eighth of that while a final decodes:
every window in flight, a final's too, waits for the joining windows' encoder batch, and so
does a final arriving during it (encoder time per window barely falls beyond batches of 8).
Language detection shares a step with any window, so it joins beside windows of any
parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from whisperwire.server.engine import (
    DETECT_LANGUAGE,
    DetectLanguage,
    GenerationParams,
    StepBatcher,
)
from whisperwire.server.queue_policy import Queued
from whisperwire.server.runner import Priority

HOLD_ROUNDS = 2  # most advances a non-final window waits for a group to gather


class StepQueued(Queued, Protocol):
    @property
    def queued_round(self) -> int:
        """The advance it arrived in."""
        ...


W = TypeVar("W", bound=StepQueued)


class StepAdmission:
    def __init__(
        self, max_batch_size: int, bulk_slots: int | None = None, joins_per_step: int | None = None
    ) -> None:
        self.slots = max_batch_size
        self.bulk_slots = bulk_slots or max(1, max_batch_size - max_batch_size // 8)
        self.group = max(1, max_batch_size // 8)
        self.joins_per_step = joins_per_step or max(8, max_batch_size // 4)
        self.final_reserve = max_batch_size // 16  # free slots only a final may take
        self._final_round = -2  # the last advance a final joined

    def choose(
        self, stepper: StepBatcher, waiting: Sequence[W], in_flight: Sequence[W], round_: int
    ) -> list[W]:
        """Of `waiting` (steppable, most urgent first), the windows that join now. One call
        admits windows of one set of parameters, and any language detection."""
        if not waiting or not self._time_to_admit(waiting, in_flight, round_):
            return []
        params = next((w.key for w in waiting if isinstance(w.key, GenerationParams)), None)
        assert params is None or isinstance(params, GenerationParams)
        windows_free = stepper.free_slots(params or DETECT_LANGUAGE)  # under `params`
        slots_free = windows_free  # and detection, which shares a step with any window
        if stepper.steppable(DETECT_LANGUAGE):
            slots_free = max(windows_free, stepper.free_slots(DETECT_LANGUAGE))
        bulk_free = self.bulk_slots - sum(1 for w in in_flight if not w.priority.interactive)
        others_free = min(slots_free - self.final_reserve, self._joins(in_flight))
        if self._final_joins_alone(waiting, round_):
            others_free = 0
        chosen: list[W] = []
        for work in waiting:
            if len(chosen) == slots_free:
                break
            is_window = not isinstance(work.key, DetectLanguage)
            if is_window and (work.key != params or windows_free <= 0):
                continue
            if work.priority is not Priority.FINAL:
                if others_free <= 0 or (not work.priority.interactive and bulk_free <= 0):
                    continue
                others_free -= 1
                bulk_free -= not work.priority.interactive
            windows_free -= is_window
            chosen.append(work)
        return chosen

    def _joins(self, in_flight: Sequence[StepQueued]) -> int:
        """How many windows other than finals may join at this advance (on an idle engine
        nobody waits for their encoder batch)."""
        if not in_flight:
            return self.slots
        final_decodes = any(w.priority is Priority.FINAL for w in in_flight)
        return max(1, self.joins_per_step // 8) if final_decodes else self.joins_per_step

    def admitted(self, works: Sequence[StepQueued], round_: int) -> None:
        """Note what joined at advance `round_`."""
        if any(w.priority is Priority.FINAL for w in works):
            self._final_round = round_

    def _final_joins_alone(self, waiting: Sequence[StepQueued], round_: int) -> bool:
        """A final's admission (an encoder batch, then its first steps) is not slowed by
        other windows joining beside it: they join at the next advance, and never wait so
        for two advances in a row."""
        final_waits = any(w.priority is Priority.FINAL for w in waiting)
        return final_waits and round_ - self._final_round > 1

    def _time_to_admit(
        self, waiting: Sequence[StepQueued], in_flight: Sequence[StepQueued], round_: int
    ) -> bool:
        """A final joins at the next step; other windows once a group has gathered, after
        HOLD_ROUNDS advances, or at once when the engine is idle."""
        return (
            not in_flight
            or any(w.priority is Priority.FINAL for w in waiting)
            or len(waiting) >= self.group
            or round_ - min(w.queued_round for w in waiting) >= HOLD_ROUNDS
        )
