"""In-flight batching on the torch engine (real tiny.en weights, CPU): windows join and leave
the running decode at step boundaries and decode exactly as in a whole batch (which the torch
engine tests hold token-for-token to OpenAI's decoder); cancelled windows free their slot at
once; the scheduler admits finals ahead of bulk work and keeps slots for streams; through a
real server, streams and files share the decode and a caller that leaves frees its windows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.grpc_helpers import (
    END,
    audio_requests,
    collect,
    config_request,
    finals,
    serving,
    stub,
    until,
)
from tests.speech import (
    CHINESE,
    ENGLISH_CLIPS,
    HESTER,
    JFK,
    NIGHTFALL,
    load_pcm16k,
    silence,
    to_s16le,
    to_wav_bytes,
    wer,
)
from whisperwire.server.domain import DecodeOptions
from whisperwire.server.engine import (
    DETECT_LANGUAGE,
    Features,
    Generation,
    GenerationParams,
    LanguageRanking,
    WindowRequest,
    never,
)
from whisperwire.server.engines.torch import TorchEngine, load_torch_engine
from whisperwire.server.engines.torch_whisper.inflight import LANE_ADVANCES, LANE_WINDOW
from whisperwire.server.features import window_features
from whisperwire.server.runner import Priority
from whisperwire.server.scheduler import BULK_CALL_ROUNDS, BatchScheduler
from whisperwire.server.tokenizer import WhisperTokenizer
from whisperwire.v1 import transcription_service_pb2 as pb

TorchModel = tuple[TorchEngine, WhisperTokenizer]
SLOTS = 4
STEPS = 4


@pytest.fixture(scope="module")
def tiny(tiny_en_dir: Path) -> TorchModel:
    """Four slots, and four steps between host reads: step-boundary effects show on clips of
    a few dozen tokens."""
    torch.set_num_threads(2)
    engine, tokenizer = load_torch_engine(
        str(tiny_en_dir), device="cpu", dtype=None, max_batch_size=SLOTS
    )
    engine._inflight.steps_per_advance = STEPS
    return engine, tokenizer


@pytest.fixture(scope="module")
def base(base_model_dir: Path) -> TorchModel:
    """Multilingual base (language detection), four slots, four steps between host reads."""
    torch.set_num_threads(2)
    engine, tokenizer = load_torch_engine(
        str(base_model_dir), device="cpu", dtype=None, max_batch_size=SLOTS
    )
    engine._inflight.steps_per_advance = STEPS
    return engine, tokenizer


@pytest.fixture
def sixteen_slots(tiny_en_dir: Path) -> TorchModel:
    """tiny.en with sixteen slots (one, a sixteenth, kept for finals), four steps per advance."""
    engine, tokenizer = load_torch_engine(
        str(tiny_en_dir), device="cpu", dtype=None, max_batch_size=16
    )
    engine._inflight.steps_per_advance = STEPS
    return engine, tokenizer


def mel_of(clip: object) -> np.ndarray:
    return window_features(load_pcm16k(clip), 80)  # type: ignore[arg-type]


def prompt_of(tokenizer: WhisperTokenizer, timestamps: bool = False) -> list[int]:
    return tokenizer.prompt(language="en", task=DecodeOptions().task, timestamps=timestamps)


def params_of(tokenizer: WhisperTokenizer) -> GenerationParams:
    return GenerationParams(max_new_tokens=224, suppress_tokens=tokenizer.non_speech_tokens())


Submitted = asyncio.Task[tuple[list[Generation], object]]


def submitter(scheduler: BatchScheduler, tokenizer: WhisperTokenizer) -> Callable[..., Submitted]:
    """submit(priority, clip=HESTER): one window of the clip through the scheduler, a task."""
    prompt, params = prompt_of(tokenizer), params_of(tokenizer)
    mel = cache(mel_of)  # each clip's log-mel once

    def submit(priority: Priority, clip: object = HESTER) -> Submitted:
        window = mel(clip)
        return asyncio.create_task(
            scheduler.generate([window], [prompt], params, priority=priority)
        )

    return submit


def drain(engine: TorchEngine, limit: int = 200) -> dict[int, Generation | LanguageRanking]:
    done: dict[int, Generation | LanguageRanking] = {}
    for _ in range(limit):
        if not engine.in_flight:
            return done
        done.update(engine.advance([], []))
    raise AssertionError("windows never finished")


# ---- the engine ----------------------------------------------------------------------------


@pytest.mark.parametrize("timestamps", [False, True], ids=["text", "timestamps"])
def test_windows_joining_mid_decode_decode_as_in_a_whole_batch(
    tiny: TorchModel, timestamps: bool
) -> None:
    """JFK and NIGHTFALL start together; HESTER (the shortest) joins 4 steps later and still
    leaves before JFK: nobody waits for the slowest window of a batch."""
    engine, tokenizer = tiny
    clips = [JFK, NIGHTFALL, HESTER]
    mels = [mel_of(c) for c in clips]
    prompt, params = prompt_of(tokenizer, timestamps), params_of(tokenizer)
    whole = engine.generate(mels, [prompt] * 3, params)

    returned: dict[int, tuple[int, Generation]] = {}
    requests = [WindowRequest(i, mels[i], prompt, params) for i in range(3)]
    for advance in range(200):
        admit = requests[:2] if advance == 0 else requests[2:] if advance == 1 else []
        for ticket, generation in engine.advance(admit, []).items():
            returned[ticket] = (advance, generation)
        if len(returned) == 3:
            break
    assert engine.in_flight == 0
    for i, expected in enumerate(whole):
        got = returned[i][1]
        assert got.token_ids == expected.token_ids, clips[i].name
        assert got.cum_logprob == pytest.approx(expected.cum_logprob, abs=1e-3)
        assert got.no_speech_prob == pytest.approx(expected.no_speech_prob, abs=1e-4)
    assert len(whole[2].token_ids) + 4 < len(whole[0].token_ids)
    assert returned[2][0] < returned[0][0]  # HESTER left first, though it joined later


def test_previous_text_is_prefilled_and_the_rest_of_the_prompt_fed_by_the_steps(
    tiny: TorchModel,
) -> None:
    """Prompts with and without previous text (an initial prompt) in one admission: the
    text is run in at admission, <|startoftranscript|> onwards through the decode steps, and
    each window still decodes token for token as in a whole batch, no-speech included."""
    engine, tokenizer = tiny
    previous = tokenizer.encode(" Ask not what your country can do.")
    prompts = [
        tokenizer.prompt(
            language="en", task=DecodeOptions().task, timestamps=False, previous_text_ids=previous
        ),
        prompt_of(tokenizer),
    ]
    mels, params = [mel_of(JFK), mel_of(HESTER)], params_of(tokenizer)
    whole = [engine.generate([m], [p], params)[0] for m, p in zip(mels, prompts, strict=True)]
    engine.advance([WindowRequest(i, mels[i], prompts[i], params) for i in range(2)], [])
    returned = drain(engine)
    for i, expected in enumerate(whole):
        assert returned[i].token_ids == expected.token_ids
        assert returned[i].cum_logprob == pytest.approx(expected.cum_logprob, abs=1e-3)
        assert returned[i].no_speech_prob == pytest.approx(expected.no_speech_prob, abs=1e-4)
    assert wer(JFK.reference, tokenizer.decode(returned[0].token_ids)) <= 0.1


def test_language_detection_rides_the_decode_steps(base: TorchModel) -> None:
    """Detection joins a running decode (JFK, in English), leaves at the next boundary with
    the whole-batch ranking, and the window decoding beside it is unchanged."""
    engine, tokenizer = base
    params = params_of(tokenizer)
    prompt = tokenizer.prompt(language="en", task=DecodeOptions().task, timestamps=False)
    clips = [JFK, CHINESE, HESTER]
    mels = [mel_of(c) for c in clips]
    whole_text = engine.generate(mels[:1], [prompt], params)[0]
    whole_rankings = engine.detect_language(mels[1:])

    engine.advance([WindowRequest(0, mels[0], prompt, params)], [])
    detecting = [WindowRequest(i, mels[i], [], DETECT_LANGUAGE) for i in (1, 2)]
    assert engine.free_slots(DETECT_LANGUAGE) == SLOTS - 1
    returned = engine.advance(detecting, [])
    assert set(returned) == {1, 2}  # back after the one advance they joined
    for ticket, expected in zip((1, 2), whole_rankings, strict=True):
        ranking = returned[ticket]
        assert isinstance(ranking, list)
        assert [code for code, _ in ranking[:3]] == [code for code, _ in expected[:3]]
        assert ranking[0][1] == pytest.approx(expected[0][1], abs=1e-4)
    assert returned[1][0][0] == "zh" and returned[2][0][0] == "en"  # type: ignore[index]
    text = drain(engine)[0]
    assert isinstance(text, Generation) and text.token_ids == whole_text.token_ids


@pytest.fixture
def long_advances(tiny: TorchModel) -> Iterator[TorchEngine]:
    """The tiny engine with sixteen steps per advance, for tests of ending one early."""
    engine = tiny[0]
    engine._inflight.steps_per_advance = 16
    yield engine
    engine._inflight.steps_per_advance = STEPS


def test_an_advance_ends_early_when_told_to(long_advances: TorchEngine, tiny: TorchModel) -> None:
    """Polled every four steps: an advance told to end runs four steps, not sixteen, and
    the window decodes the same."""
    engine, tokenizer = long_advances, tiny[1]
    prompt, params, mel = prompt_of(tokenizer), params_of(tokenizer), mel_of(JFK)

    def advances_to_finish(interrupted: Callable[[], bool]) -> tuple[int, Generation]:
        done = engine.advance([WindowRequest(0, mel, prompt, params)], [], interrupted)
        count = 1
        while not done:
            done = engine.advance([], [], interrupted)
            count += 1
        result = done[0]
        assert isinstance(result, Generation)
        return count, result

    full, text = advances_to_finish(never)
    short, same_text = advances_to_finish(lambda: True)
    assert same_text.token_ids == text.token_ids
    assert len(text.token_ids) > 16 and full == -(-(len(text.token_ids) + 2) // 16)
    assert short >= 3 * full


def test_an_urgent_window_is_returned_the_moment_it_finishes(
    long_advances: TorchEngine, tiny: TorchModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NIGHTFALL (urgent, 27 steps) beside a longer window: the advance in which NIGHTFALL
    finishes ends at the next four-step boundary instead of running all sixteen steps (and
    the longer window waits meanwhile)."""
    engine, tokenizer = long_advances, tiny[1]
    prompt, params = prompt_of(tokenizer), params_of(tokenizer)
    longer = window_features(np.concatenate([load_pcm16k(JFK), load_pcm16k(NIGHTFALL)]), 80)
    steps_run: list[int] = []
    run_steps = engine._inflight._steps

    def counted(rows: int, reach: int, count: int) -> None:
        steps_run.append(count)
        run_steps(rows, reach, count)

    monkeypatch.setattr(engine._inflight, "_steps", counted)

    def steps_until_nightfall_returns(urgent: bool) -> tuple[int, bool]:
        """Steps run until NIGHTFALL came back, and whether the longer window is waiting
        for its turn by then (admitted beside an urgent window: not even encoded yet)."""
        steps_run.clear()
        admit = [
            WindowRequest(0, longer, prompt, params),
            WindowRequest(1, mel_of(NIGHTFALL), prompt, params, urgent=urgent),
        ]
        done = engine.advance(admit, [])
        while 1 not in done:
            done = engine.advance([], [])
        assert 0 not in done  # the longer window is still decoding
        waiting = engine._inflight._tickets.index(0) in engine._inflight._waiting
        steps = sum(steps_run)
        drain(engine)
        return steps, waiting

    assert steps_until_nightfall_returns(False) == (32, False)
    assert steps_until_nightfall_returns(True) == (28, True)  # 27 steps, seen at the next look


def test_an_urgent_window_decodes_in_its_own_slots_while_the_others_wait(
    sixteen_slots: TorchModel,
) -> None:
    """Sixteen slots: three bulk windows decode in slots 1-3; a final (urgent) takes slot 0,
    and advances step slot 0 alone, the bulk rows untouched, at most LANE_ADVANCES of any
    LANE_WINDOW; a bulk window admitted meanwhile keeps a slot but is encoded only once
    every row steps again; every window decodes exactly as in a whole batch."""
    engine, tokenizer = sixteen_slots
    engine._inflight.steps_per_advance = 1  # HESTER's ~16 steps outlast LANE_ADVANCES
    decoder = engine._inflight
    prompt, params = prompt_of(tokenizer), params_of(tokenizer)
    mels = [mel_of(c) for c in (JFK, NIGHTFALL, JFK, HESTER, NIGHTFALL)]
    whole = engine.generate(mels, [prompt] * len(mels), params)

    bulk = [WindowRequest(i, mels[i], prompt, params) for i in range(3)]
    returned = dict(engine.advance(bulk, []))
    assert decoder._tickets[:4] == [None, 0, 1, 2]  # slot 0 is kept for urgent windows
    final = WindowRequest(3, mels[3], prompt, params, urgent=True)
    late = WindowRequest(4, mels[4], prompt, params)
    bulk_moved: list[bool] = []
    for admit in ([final], [late]):
        before = decoder.state.position[1:4].clone()
        returned.update(engine.advance(admit, []))
        bulk_moved.append(not torch.equal(before, decoder.state.position[1:4]))
    late_slot = decoder._tickets.index(4)
    assert late_slot in decoder._waiting  # admitted, not yet encoded
    while 3 not in returned:
        before = decoder.state.position[1:4].clone()
        returned.update(engine.advance([], []))
        bulk_moved.append(not torch.equal(before, decoder.state.position[1:4]))
    assert bulk_moved[: LANE_ADVANCES + 1] == [False] * LANE_ADVANCES + [True]
    assert len(bulk_moved) > LANE_WINDOW
    for first in range(len(bulk_moved) - LANE_WINDOW + 1):
        assert bulk_moved[first : first + LANE_WINDOW].count(False) <= LANE_ADVANCES
    assert not decoder._waiting  # started at the first advance that stepped every row
    returned.update(drain(engine))
    for ticket, expected in enumerate(whole):
        got = returned[ticket]
        assert isinstance(got, Generation)
        assert got.token_ids == expected.token_ids


def test_a_window_waiting_beside_a_final_can_be_cancelled(tiny: TorchModel) -> None:
    """A bulk window admitted with a final waits for its encoder batch; cancelled meanwhile,
    its slot is free at once and it is never encoded; the final decodes as usual."""
    engine, tokenizer = tiny
    decoder = engine._inflight
    prompt, params = prompt_of(tokenizer), params_of(tokenizer)
    free = engine.free_slots(params)
    final = WindowRequest(0, mel_of(HESTER), prompt, params, urgent=True)
    done = engine.advance([final, WindowRequest(1, mel_of(JFK), prompt, params)], [])
    assert decoder._tickets.index(1) in decoder._waiting
    done.update(engine.advance([], [1]))
    assert not decoder._waiting and engine.free_slots(params) == free - (0 not in done)
    done.update(drain(engine))
    assert set(done) == {0}
    assert isinstance(done[0], Generation)
    assert wer(HESTER.reference, tokenizer.decode(done[0].token_ids)) <= 0.1


def test_a_cancelled_window_frees_its_slot_at_the_next_step(tiny: TorchModel) -> None:
    engine, tokenizer = tiny
    prompt, params = prompt_of(tokenizer), params_of(tokenizer)
    clips = [JFK, NIGHTFALL, HESTER, JFK]
    engine.advance([WindowRequest(i, mel_of(c), prompt, params) for i, c in enumerate(clips)], [])
    assert engine.in_flight == SLOTS
    assert engine.free_slots(params) == 0

    returned = engine.advance([], [0, 3])  # two callers went away mid-decode
    assert engine.free_slots(params) == 2
    engine.advance([WindowRequest(9, mel_of(HESTER), prompt, params)], [])
    returned.update(drain(engine))
    assert set(returned) == {1, 2, 9}
    assert wer(NIGHTFALL.reference, tokenizer.decode(returned[1].token_ids)) <= 0.1
    assert returned[2].token_ids == returned[9].token_ids


def test_windows_under_other_logit_rules_wait_for_the_decode_to_empty(tiny: TorchModel) -> None:
    engine, tokenizer = tiny
    prompt, params = prompt_of(tokenizer), params_of(tokenizer)
    other = GenerationParams(max_new_tokens=224)  # no non-speech suppression
    engine.advance([WindowRequest(0, mel_of(HESTER), prompt, params)], [])
    assert engine.free_slots(params) == SLOTS - 1
    assert engine.free_slots(other) == 0
    drain(engine)
    assert engine.free_slots(other) == SLOTS
    assert not engine.steppable(GenerationParams(max_new_tokens=224, beam_size=5))
    assert not engine.steppable(GenerationParams(max_new_tokens=224, temperature=0.4))


def test_a_failing_step_drops_every_window_and_the_engine_keeps_serving(
    tiny: TorchModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, tokenizer = tiny
    prompt, params = prompt_of(tokenizer), params_of(tokenizer)
    engine.advance([WindowRequest(0, mel_of(JFK), prompt, params)], [])

    def broken(*_: object) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(engine._inflight, "_steps", broken)
    with pytest.raises(RuntimeError, match="illegal memory"):
        engine.advance([WindowRequest(1, mel_of(HESTER), prompt, params)], [])
    assert engine.in_flight == 0
    monkeypatch.undo()
    engine.advance([WindowRequest(2, mel_of(HESTER), prompt, params)], [])
    assert wer(HESTER.reference, tokenizer.decode(drain(engine)[2].token_ids)) <= 0.1


# ---- the scheduler -------------------------------------------------------------------------


class RecordingEngine:
    """The real torch engine, recording which tickets each advance admitted."""

    def __init__(self, engine: TorchEngine) -> None:
        self._engine = engine
        self.info = engine.info
        self.admitted: list[list[int]] = []
        self.calls: list[str] = []
        self.interrupted: list[bool] = []  # per advance: whether it was told to end early
        self.generate = engine.generate
        self.steppable = engine.steppable
        self.free_slots = engine.free_slots

    def detect_language(self, features: Sequence[Features]) -> list[list[tuple[str, float]]]:
        self.calls.append("detect")
        return self._engine.detect_language(features)

    @property
    def in_flight(self) -> int:
        return self._engine.in_flight

    def advance(
        self,
        admit: Sequence[WindowRequest],
        cancel: Sequence[int],
        interrupted: Callable[[], bool] = never,
    ) -> dict[int, Generation | LanguageRanking]:
        self.admitted.append([w.ticket for w in admit])
        self.calls.append("advance")
        seen: list[bool] = []

        def watched() -> bool:
            seen.append(interrupted())
            return seen[-1]

        try:
            return self._engine.advance(admit, cancel, watched)
        finally:
            self.interrupted.append(any(seen))


async def test_finals_join_ahead_of_queued_bulk_and_bulk_keeps_its_slots(
    tiny: TorchModel,
) -> None:
    """Six bulk windows queue first; bulk may hold 2 of the 4 slots. A final and a partial
    arriving later join before the bulk windows still queued, the final first."""
    engine, tokenizer = RecordingEngine(tiny[0]), tiny[1]
    scheduler = BatchScheduler(engine, bulk_batch_size=2)
    submit = submitter(scheduler, tokenizer)
    bulk = [submit(Priority.BULK) for _ in range(6)]
    await asyncio.sleep(0)  # queued before the loop starts
    partial, final = submit(Priority.PARTIAL), submit(Priority.FINAL)
    await asyncio.sleep(0)
    scheduler.start()
    try:
        results = await asyncio.wait_for(asyncio.gather(*bulk, partial, final), 300)
    finally:
        await scheduler.stop()
    admissions = [ticket for call in engine.admitted for ticket in call]
    final_ticket, partial_ticket = 7, 6  # arrival numbers
    assert admissions[:2] == [final_ticket, partial_ticket]  # ahead of every bulk window
    assert engine.admitted[0] == [final_ticket]  # the final joins by itself
    # then the rest, one at a time beside the decoding final; bulk holds its 2 slots
    assert engine.admitted[1:5] == [[partial_ticket], [0], [1], []]
    texts = {tokenizer.decode(generations[0].token_ids) for generations, _ in results}
    assert len(texts) == 1 and wer(HESTER.reference, texts.pop()) <= 0.1


async def test_a_final_finds_a_free_slot_while_partials_and_bulk_fill_the_engine(
    sixteen_slots: TorchModel,
) -> None:
    """Sixteen slots, one kept for finals: bulk and partial windows queued first fill the
    other fifteen and more wait; a final arriving then joins at the very next advance."""
    engine, tokenizer = sixteen_slots
    recording = RecordingEngine(engine)
    scheduler = BatchScheduler(recording, bulk_batch_size=16)
    submit = submitter(scheduler, tokenizer)
    others = [submit(Priority.BULK) for _ in range(12)] + [
        submit(Priority.PARTIAL) for _ in range(8)
    ]
    await asyncio.sleep(0)
    scheduler.start()
    try:
        assert await until(lambda: scheduler.in_flight == 15, polls=600)
        advances_before = len(recording.admitted)
        final = submit(Priority.FINAL)
        [generation], _ = await asyncio.wait_for(final, 300)
        await asyncio.wait_for(asyncio.gather(*others), 300)
    finally:
        await scheduler.stop()
    assert len(recording.admitted[0]) == 15  # the sixteenth slot stayed free
    final_ticket = 20
    assert final_ticket in recording.admitted[advances_before]  # joined at the next advance
    assert wer(HESTER.reference, tokenizer.decode(generation.token_ids)) <= 0.1


async def test_few_windows_join_a_running_decode_at_once_and_fewer_beside_a_final(
    sixteen_slots: TorchModel,
) -> None:
    """Every joining window's encoder batch holds up the windows in flight: with two joins
    per step, six bulk windows queued behind a decoding one join two at a time; three more
    queued with a final join one at a time while the final decodes (it joins alone)."""
    engine, tokenizer = sixteen_slots
    recording = RecordingEngine(engine)
    scheduler = BatchScheduler(recording, step_joins=2)
    submit = submitter(scheduler, tokenizer)
    works = [submit(Priority.BULK)]
    scheduler.start()
    try:
        assert await until(lambda: scheduler.in_flight == 1, polls=600)
        works += [submit(Priority.BULK) for _ in range(6)]
        assert await until(lambda: scheduler.in_flight == 7, polls=600)
        works += [submit(Priority.FINAL)] + [submit(Priority.BULK) for _ in range(3)]
        results = await asyncio.wait_for(asyncio.gather(*works), 300)
    finally:
        await scheduler.stop()
    admissions = [call for call in recording.admitted if call]
    final_ticket = 7
    assert admissions[0] == [0]
    assert [len(call) for call in admissions[1:4]] == [2, 2, 2]  # the six bulk windows
    assert admissions[4] == [final_ticket]  # by itself
    assert admissions[5:8] == [[8], [9], [10]]  # one at a time while the final decodes
    for generations, _ in results:
        assert wer(HESTER.reference, tokenizer.decode(generations[0].token_ids)) <= 0.1


async def test_a_finals_arrival_ends_the_running_advance(
    long_advances: TorchEngine, tiny: TorchModel
) -> None:
    """Two bulk windows decode in an advance of 200 steps (longer than either window); a
    final submitted meanwhile ends that advance at its next look, and joins the next one."""
    engine, tokenizer = RecordingEngine(long_advances), tiny[1]
    long_advances._inflight.steps_per_advance = 200
    scheduler = BatchScheduler(engine)
    submit = submitter(scheduler, tokenizer)
    bulk = [submit(Priority.BULK, JFK), submit(Priority.BULK, NIGHTFALL)]
    await asyncio.sleep(0)
    scheduler.start()
    try:
        assert await until(lambda: scheduler.in_flight == 2, polls=600)
        final = submit(Priority.FINAL)
        [generation], _ = await asyncio.wait_for(final, 300)
        await asyncio.wait_for(asyncio.gather(*bulk), 300)
    finally:
        await scheduler.stop()
    assert engine.interrupted[0]  # the advance running when the final arrived ended early
    assert engine.admitted[1] == [2]  # and the final joined the next one
    assert wer(HESTER.reference, tokenizer.decode(generation.token_ids)) <= 0.1


async def test_a_files_whole_batch_call_waits_while_a_final_decodes(tiny: TorchModel) -> None:
    """A whole-batch call (a file's language detection) stops every window in flight, so
    while a stream's final decodes, bulk calls wait (at most a few advances)."""
    engine, tokenizer = RecordingEngine(tiny[0]), tiny[1]
    scheduler = BatchScheduler(engine)
    mel = mel_of(HESTER)
    detect = asyncio.create_task(scheduler.detect_language([mel], priority=Priority.BULK))
    final = asyncio.create_task(
        scheduler.generate(
            [mel], [prompt_of(tokenizer)], params_of(tokenizer), priority=Priority.FINAL
        )
    )
    await asyncio.sleep(0)
    scheduler.start()
    try:
        (languages, _), ((generation,), _) = await asyncio.wait_for(
            asyncio.gather(detect, final), 300
        )
    finally:
        await scheduler.stop()
    assert engine.calls[0] == "advance"  # the final joined first, though the file came first
    assert "detect" in engine.calls[: BULK_CALL_ROUNDS + 1]  # and the file waited boundedly
    assert len(languages) == 1  # tiny.en is English-only: no language tokens to rank
    assert wer(HESTER.reference, tokenizer.decode(generation.token_ids)) <= 0.1


async def test_a_files_language_detection_joins_the_steps(base: TorchModel) -> None:
    """On an engine that detects in flight, a file's detection is step work like its
    windows: no whole-batch call stops the stream's final decoding beside it."""
    engine, tokenizer = RecordingEngine(base[0]), base[1]
    scheduler = BatchScheduler(engine)
    prompt = tokenizer.prompt(language="en", task=DecodeOptions().task, timestamps=False)
    detect = asyncio.create_task(
        scheduler.detect_language([mel_of(CHINESE)], priority=Priority.BULK)
    )
    final = asyncio.create_task(
        scheduler.generate(
            [mel_of(HESTER)], [prompt], params_of(tokenizer), priority=Priority.FINAL
        )
    )
    await asyncio.sleep(0)
    scheduler.start()
    try:
        ([ranking], _), ((generation,), _) = await asyncio.wait_for(
            asyncio.gather(detect, final), 300
        )
    finally:
        await scheduler.stop()
    assert "detect" not in engine.calls
    assert engine.admitted[:2] == [[1], [0]]  # the final by itself, then the detection
    assert ranking[0][0] == "zh"
    assert wer(HESTER.reference, tokenizer.decode(generation.token_ids)) <= 0.1


async def test_step_batching_off_runs_whole_batches(tiny: TorchModel) -> None:
    engine, tokenizer = RecordingEngine(tiny[0]), tiny[1]
    scheduler = BatchScheduler(engine, step_batching=False)
    scheduler.start()
    try:
        [generation], _ = await scheduler.generate(
            [mel_of(HESTER)], [prompt_of(tokenizer)], params_of(tokenizer), priority=Priority.FINAL
        )
    finally:
        await scheduler.stop()
    assert engine.admitted == []
    assert wer(HESTER.reference, tokenizer.decode(generation.token_ids)) <= 0.1


# ---- through a real server -----------------------------------------------------------------


def long_recording(repeats: int = 2) -> tuple[bytes, str]:
    clips = [c for _ in range(repeats) for c in ENGLISH_CLIPS]
    audio = np.concatenate([x for c in clips for x in (load_pcm16k(c), silence(1.0))])
    return to_wav_bytes(audio), " ".join(c.reference for c in clips)


async def test_streams_and_files_share_the_decode_and_each_gets_its_own_text(
    tiny: TorchModel,
) -> None:
    engine, tokenizer = tiny
    wav, reference = long_recording()
    async with serving(engine, tokenizer) as (running, channel):
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, running.scheduler.in_flight)
                await asyncio.sleep(0.01)

        async def transcribe_file() -> str:
            request = pb.TranscribeRequest(audio_content=wav, config=pb.RecognitionConfig())
            return (await stub(channel).Transcribe(request)).transcript.text

        async def talk(clip: object) -> str:
            pcm = to_s16le(load_pcm16k(clip))  # type: ignore[arg-type]
            requests = [config_request(language="en"), *audio_requests(pcm, 3200), END]
            [final] = finals(await collect(stub(channel).StreamAudio(iter(requests))))
            return final.final_result.transcript.text

        watcher = asyncio.create_task(watch())
        texts = await asyncio.gather(transcribe_file(), *(talk(c) for c in ENGLISH_CLIPS))
        watcher.cancel()
    assert wer(reference, texts[0]) <= 0.1
    for clip, text in zip(ENGLISH_CLIPS, texts[1:], strict=True):
        assert wer(clip.reference, text) <= 0.1, (clip.name, text)
    assert peak >= 2  # windows of different callers decoded side by side


async def test_a_caller_that_leaves_frees_its_windows_mid_decode(tiny: TorchModel) -> None:
    engine, tokenizer = tiny
    wav, _ = long_recording(repeats=3)
    async with serving(engine, tokenizer) as (running, channel):
        call = stub(channel).Transcribe(
            pb.TranscribeRequest(audio_content=wav, config=pb.RecognitionConfig())
        )
        assert await until(lambda: running.scheduler.in_flight > 0, polls=600)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await until(
            lambda: engine.in_flight == 0 and running.scheduler.in_flight == 0, polls=600
        )
        assert running.scheduler.queue_depth == 0
        reply = await stub(channel).Transcribe(
            pb.TranscribeRequest(audio_content=HESTER.read(), config=pb.RecognitionConfig())
        )
    assert wer(HESTER.reference, reply.transcript.text) <= 0.1
