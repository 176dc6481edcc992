"""TensorRT-LLM adapter: ModelRunnerCpp's executor (GPU) behind the engine seam, with
step-level batching (engine.StepBatcher): windows join and leave the executor's running decode.

The runtime facts this relies on are in docs/trtllm.md, cited as `docs/trtllm.md#<anchor>`.
torch is imported only when the engine runs; loading and checking engine directories lives in
trtllm_loader.py.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from whisperwire.server.engine import (
    EngineInfo,
    Features,
    Generation,
    GenerationParams,
    StepWork,
    WindowRequest,
    never,
)
from whisperwire.server.errors import EngineError, EngineLostError, ModelNotFoundError
from whisperwire.server.tokenizer import WhisperTokenizer

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# docs/trtllm.md#engine-dir: run.py's test for a multilingual vocabulary.
_MULTILINGUAL_MIN_VOCAB = 51865
# docs/trtllm.md#precision: the feature dtypes an encoder engine may be built with.
_FEATURE_DTYPES = ("float16", "bfloat16", "float32")
# docs/trtllm.md#executor: how long one `advance` waits for a window to finish when none has;
# new windows are enqueued between waits, so this bounds how long an admitted one waits.
STEP_WAIT = datetime.timedelta(milliseconds=5)


class _Runner(Protocol):
    """The part of tensorrt_llm.runtime.ModelRunnerCpp this adapter uses: its executor."""

    @property
    def session(self) -> Any:
        """tensorrt_llm.bindings.executor.Executor (docs/trtllm.md#executor); `shutdown()`
        releases its GPU memory and threads."""
        ...


RunnerFactory = Callable[[], _Runner]


@dataclass(frozen=True)
class EngineConfig:
    """What the adapter needs from encoder/ and decoder/config.json (docs/trtllm.md#engine-dir)."""

    n_mels: int
    num_languages: int
    vocab_size: int
    dtype: str
    """The encoder's dtype, which its input features must have (docs/trtllm.md#precision)."""
    max_batch_size: int
    max_beam_width: int
    max_input_len: int
    max_seq_len: int

    @property
    def multilingual(self) -> bool:
        return self.vocab_size >= _MULTILINGUAL_MIN_VOCAB

    @classmethod
    def read(cls, engine_dir: Path) -> EngineConfig:
        encoder = _read_json(engine_dir / "encoder" / "config.json")
        decoder = _read_json(engine_dir / "decoder" / "config.json")
        try:
            build = decoder["build_config"]
            config = cls(
                n_mels=int(encoder["pretrained_config"]["n_mels"]),
                num_languages=int(encoder["pretrained_config"]["num_languages"]),
                vocab_size=int(decoder["pretrained_config"]["vocab_size"]),
                dtype=str(encoder["pretrained_config"]["dtype"]),
                max_batch_size=int(build["max_batch_size"]),
                max_beam_width=int(build.get("max_beam_width", 1)),  # trtllm-build's default
                max_input_len=int(build["max_input_len"]),
                max_seq_len=int(build["max_seq_len"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ModelNotFoundError(
                f"unexpected engine config in {engine_dir}: {error}"
            ) from error
        if config.dtype not in _FEATURE_DTYPES:
            raise ModelNotFoundError(
                f"the encoder engine in {engine_dir} has dtype {config.dtype!r}; "
                f"expected one of {', '.join(_FEATURE_DTYPES)}"
            )
        return config


def _read_json(path: Path) -> dict[str, Any]:
    try:
        config: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelNotFoundError(f"cannot read engine config {path}: {error}") from error
    return config


@dataclass
class _Request:
    """One executor request of a window, and its answer once final."""

    request: Any  # tensorrt_llm.bindings.executor.Request
    id: int | None = None
    result: Any = None  # its final Result
    answered: bool = False


@dataclass
class _Window:
    """One window's executor requests: its decode and, for no_speech_prob and languages, the
    step after <|startoftranscript|> (docs/trtllm.md#probe)."""

    beam_width: int
    probe: _Request | None
    decode: _Request | None
    error: str | None = None

    @property
    def parts(self) -> list[_Request]:
        return [part for part in (self.probe, self.decode) if part is not None]

    @property
    def pending(self) -> list[_Request]:
        return [part for part in self.parts if not part.answered]

    @property
    def done(self) -> bool:
        return self.error is not None or not self.pending

    def take(self, response: Any) -> None:
        """Record a response to one of this window's requests (docs/trtllm.md#executor)."""
        part = next(p for p in self.parts if p.id == response.request_id)
        if response.has_error():
            part.answered = True
            self.error = self.error or str(response.error_msg)
        elif response.result.is_final:
            part.answered, part.result = True, response.result


class TrtLlmEngine:
    """Whisper on ModelRunnerCpp's executor, one request per window awaited by its id, so
    whole-batch calls and step-level batching share one executor (docs/trtllm.md#executor).
    `make_runner` builds a runner; it is called again whenever an executor call raises, because
    the executor's state is unknown after that (docs/trtllm.md#errors)."""

    def __init__(
        self,
        make_runner: RunnerFactory,
        config: EngineConfig,
        tokenizer: WhisperTokenizer,
        *,
        model_name: str,
        max_batch_size: int,
        max_beam_width: int = 1,
        feature_device: str = "cpu",
        step_wait: datetime.timedelta = STEP_WAIT,
    ) -> None:
        self._make_runner = make_runner
        self._runner: _Runner | None = make_runner()
        self._config = config
        self._tokenizer = tokenizer
        self._feature_device = feature_device
        self._step_wait = step_wait
        # The runner's KV cache is sized for this many beams; wider asks are narrowed to it.
        self._max_beam_width = max(1, min(max_beam_width, config.max_beam_width))
        # Step-level batching: windows in flight by ticket, their requests' tickets by request
        # id, and cancelled requests whose final response is still to be read.
        self._windows: dict[int, _Window] = {}
        self._tickets: dict[int, int] = {}
        self._draining: set[int] = set()
        self.info = EngineInfo(
            name="trtllm",
            model=model_name,
            n_mels=config.n_mels,
            multilingual=config.multilingual,
            num_languages=config.num_languages if config.multilingual else 0,
            max_batch_size=min(max_batch_size, config.max_batch_size),
            # docs/trtllm.md#generate: no timestamp rules in TensorRT-LLM, so no timestamps.
            supports_timestamps=False,
            supports_word_timestamps=False,
            device="cuda",
        )

    # --- whole-batch calls --------------------------------------------------------------

    def generate(
        self,
        features: Sequence[Features],
        prompts: Sequence[Sequence[int]],
        params: GenerationParams,
    ) -> list[Generation]:
        windows = [self._window(f, p, params) for f, p in zip(features, prompts, strict=True)]
        self._run_to_completion(windows)
        return self._generations(windows)

    def detect_language(self, features: Sequence[Features]) -> list[list[tuple[str, float]]]:
        sot = [self._tokenizer.sot]
        windows = [
            _Window(1, _Request(self._probe_request(self._encoder_input(f), sot)), None)
            for f in features
        ]
        self._run_to_completion(windows)
        return [ranked for _, ranked in self._probabilities(windows)]

    def _run_to_completion(self, windows: list[_Window]) -> None:
        """Enqueue the windows and read each request's final response, by id, so responses
        of step-level windows in flight stay where they are."""
        self._submit(windows)
        for window in windows:
            while window.pending:
                request_id = window.pending[0].id
                for response in self._call("await_responses", request_id):
                    window.take(response)
        failed = [window.error for window in windows if window.error is not None]
        if failed:
            raise EngineError(f"TensorRT-LLM failed on a batch of {len(windows)}: {failed[0]}")

    # --- step-level batching (engine.StepBatcher) ---------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._windows)

    def steppable(self, params: StepWork) -> bool:
        # Language detection runs as whole-batch probe requests. The probe decodes with one
        # beam, and the executor runs one beam width at a time.
        if not isinstance(params, GenerationParams):
            return False
        return self._beam_width(params) == 1 or not params.return_no_speech_prob

    def free_slots(self, params: StepWork) -> int:
        if not isinstance(params, GenerationParams) or not self.steppable(params):
            return 0
        beam_width = self._beam_width(params)
        if any(window.beam_width != beam_width for window in self._windows.values()):
            return 0  # the executor would hold it back until those windows finish
        busy = sum(len(w.pending) for w in self._windows.values()) + len(self._draining)
        requests_per_window = 2 if params.return_no_speech_prob else 1
        return max(0, self.info.max_batch_size - busy) // requests_per_window

    def advance(
        self,
        admit: Sequence[WindowRequest],
        cancel: Sequence[int],
        interrupted: Callable[[], bool] = never,
    ) -> dict[int, Generation | EngineError]:
        # `interrupted` goes unpolled: one advance waits at most `_step_wait` for responses.
        finished: dict[int, Generation | EngineError] = {}
        for ticket in cancel:
            self._cancel_window(ticket)
        admitted: dict[int, _Window] = {}
        for item in admit:
            try:
                assert isinstance(item.params, GenerationParams)  # steppable() said so
                admitted[item.ticket] = self._window(item.features, item.prompt, item.params)
            except EngineError as error:  # a prompt this engine cannot take fails it alone
                finished[item.ticket] = error
        self._submit(list(admitted.values()))
        for ticket, window in admitted.items():
            self._track(ticket, window)
        if self._windows or self._draining:
            for response in self._call("await_responses", timeout=self._step_wait):
                self._route(response)
        finished.update(self._finished_windows())
        return finished

    def _track(self, ticket: int, window: _Window) -> None:
        self._windows[ticket] = window
        for part in window.parts:
            assert part.id is not None  # enqueued by _submit
            self._tickets[part.id] = ticket

    def _cancel_window(self, ticket: int) -> None:
        """Cancel a window's requests: the executor frees their slots at its next step and
        answers each with a final, cancelled response, which is read and dropped."""
        window = self._windows.pop(ticket, None)
        if window is not None:
            self._cancel_requests(window.pending)

    def _cancel_requests(self, parts: list[_Request]) -> None:
        for part in parts:
            request_id = part.id
            assert request_id is not None  # enqueued by _submit
            self._call("cancel_request", request_id)
            self._tickets.pop(request_id, None)
            self._draining.add(request_id)

    def _route(self, response: Any) -> None:
        request_id = response.request_id
        final = response.has_error() or response.result.is_final
        if request_id in self._draining:
            if final:
                self._draining.discard(request_id)
            return
        ticket = self._tickets.get(request_id)
        if ticket is None:
            log.warning("TensorRT-LLM answered request %d, which no window awaits", request_id)
            return
        if final:
            del self._tickets[request_id]
        self._windows[ticket].take(response)

    def _finished_windows(self) -> dict[int, Generation | EngineError]:
        done = {ticket: w for ticket, w in self._windows.items() if w.done}
        finished: dict[int, Generation | EngineError] = {}
        for ticket, window in done.items():
            del self._windows[ticket]
            if window.error is not None:
                self._cancel_requests(window.pending)  # its other request, if still running
                finished[ticket] = EngineError(f"TensorRT-LLM failed on a window: {window.error}")
        succeeded = {t: w for t, w in done.items() if w.error is None}
        generations = self._generations(list(succeeded.values()))
        finished.update(zip(succeeded, generations, strict=True))
        return finished

    # --- building requests (docs/trtllm.md#executor) -------------------------------------

    def _window(
        self, features: Features, prompt: Sequence[int], params: GenerationParams
    ) -> _Window:
        mel = self._encoder_input(features)
        fitted = self._fit_prompt(prompt)
        probe = None
        if params.return_no_speech_prob:
            up_to_sot = _through_sot(fitted, self._tokenizer.sot)
            probe = _Request(self._probe_request(mel, up_to_sot))
        decode = _Request(self._decode_request(mel, fitted, params))
        return _Window(self._beam_width(params), probe, decode)

    def _decode_request(
        self, mel: torch.Tensor, prompt: list[int], params: GenerationParams
    ) -> Any:
        executor = _executor_bindings()
        return executor.Request(
            prompt,
            self._max_new_tokens(prompt, params.max_new_tokens),
            sampling_config=executor.SamplingConfig(self._beam_width(params), **_sampling(params)),
            # cum_log_probs come back only with return_log_probs (docs/trtllm.md#outputs).
            output_config=executor.OutputConfig(
                return_log_probs=True, exclude_input_from_output=True
            ),
            # Whisper's suppress_tokens as one-token bad words (docs/trtllm.md#generate).
            bad_words=[[token] for token in sorted(set(params.suppress_tokens))] or None,
            **self._window_inputs(mel),
        )

    def _probe_request(self, mel: torch.Tensor, prompt: list[int]) -> Any:
        """One greedy step whose logits Whisper reads (docs/trtllm.md#probe)."""
        executor = _executor_bindings()
        return executor.Request(
            prompt,
            1,
            sampling_config=executor.SamplingConfig(1, top_k=1),
            output_config=executor.OutputConfig(
                return_generation_logits=True, exclude_input_from_output=True
            ),
            **self._window_inputs(mel),
        )

    def _window_inputs(self, mel: torch.Tensor) -> dict[str, Any]:
        # docs/trtllm.md#generate: [frames, n_mels] features, frames // 2 encoder outputs;
        # Whisper uses <|endoftext|> as both end and padding.
        return {
            "end_id": self._tokenizer.eot,
            "pad_id": self._tokenizer.eot,
            "encoder_input_features": mel,
            "encoder_output_length": mel.shape[0] // 2,
        }

    def _submit(self, windows: list[_Window]) -> None:
        """Enqueue every probe, then every decode: the executor admits requests in order and
        holds a different beam width back, so probes never wait behind wide beams."""
        parts = [w.probe for w in windows if w.probe is not None]
        parts += [w.decode for w in windows if w.decode is not None]
        if not parts:
            return
        ids = self._call("enqueue_requests", [part.request for part in parts])
        for part, request_id in zip(parts, ids, strict=True):
            part.id = int(request_id)

    def _encoder_input(self, features: Features) -> torch.Tensor:
        import torch

        # Our [n_mels, 3000] windows are time-major for the engine; 3000 frames is even and the
        # full window OpenAI's checkpoints need. The dtype is the engine's (#precision).
        mel = torch.from_numpy(np.ascontiguousarray(features.T))
        return mel.to(device=self._feature_device, dtype=getattr(torch, self._config.dtype))

    def _beam_width(self, params: GenerationParams) -> int:
        return max(1, min(params.beam_size, self._max_beam_width))

    def _fit_prompt(self, prompt: Sequence[int]) -> list[int]:
        """The prompt, its previous-text context trimmed to the decoder's max_input_len."""
        limit = self._config.max_input_len
        if len(prompt) <= limit:
            return list(prompt)
        tokens = list(prompt)
        sot_sequence = tokens[tokens.index(self._tokenizer.sot) :]
        if len(sot_sequence) > limit:
            raise EngineError(f"prompt of {len(sot_sequence)} tokens exceeds the engine's {limit}")
        # Keep the most recent context, as OpenAI truncates it; <|startofprev|> takes one slot.
        room = limit - len(sot_sequence) - 1
        context = tokens[1 : len(tokens) - len(sot_sequence)]
        return [tokens[0], *context[-room:], *sot_sequence] if room > 0 else sot_sequence

    def _max_new_tokens(self, prompt: list[int], requested: int) -> int:
        # docs/trtllm.md#engine-dir: the decoder's max_seq_len caps prompt + generated tokens.
        return max(1, min(requested, self._config.max_seq_len - len(prompt)))

    # --- reading the answers (docs/trtllm.md#outputs) -----------------------------------

    def _generations(self, windows: list[_Window]) -> list[Generation]:
        probes = iter(self._probabilities([w for w in windows if w.probe is not None]))
        generations = []
        for window in windows:
            assert window.decode is not None  # decode windows only
            no_speech = next(probes)[0] if window.probe is not None else None
            result = window.decode.result
            # Beam 0 is the best; exclude_input_from_output leaves the generated tokens,
            # end-of-text excluded.
            cum = result.cum_log_probs[0] if result.cum_log_probs else None
            generations.append(
                Generation(
                    token_ids=[int(t) for t in result.output_token_ids[0]],
                    cum_logprob=None if cum is None else float(cum),
                    no_speech_prob=no_speech,
                )
            )
        return generations

    def _probabilities(self, windows: list[_Window]) -> list[tuple[float, list[tuple[str, float]]]]:
        """Per window: no_speech_prob and the language ranking, from its probe step's logits."""
        if not windows:
            return []
        import torch

        # Each result's logits are [beams, steps, vocab]: beam 0, the one step.
        logits = torch.stack(
            [w.probe.result.generation_logits[0, 0] for w in windows if w.probe is not None]
        ).float()
        probabilities = torch.softmax(logits, dim=-1)[:, self._tokenizer.no_speech]
        languages = torch.tensor(self._tokenizer.language_token_ids, device=logits.device)
        language_probabilities = torch.softmax(logits[:, languages], dim=-1)
        return [
            (float(p), self._ranked_languages(row))
            for p, row in zip(probabilities.tolist(), language_probabilities.tolist(), strict=True)
        ]

    def _ranked_languages(self, probabilities: list[float]) -> list[tuple[str, float]]:
        pairs = zip(self._tokenizer.languages, probabilities, strict=True)
        return sorted(pairs, key=lambda pair: pair[1], reverse=True)

    # --- the executor and its failures (docs/trtllm.md#errors) ----------------------------

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One executor call; if it raises, the executor is replaced and every step-level
        window in flight is lost with it."""
        runner = self._live_runner()
        try:
            return getattr(runner.session, method)(*args, **kwargs)
        except Exception as error:
            self._windows.clear()
            self._tickets.clear()
            self._draining.clear()
            self._replace_runner(runner)
            raise EngineError(f"TensorRT-LLM's executor failed: {error}") from error

    def _live_runner(self) -> _Runner:
        if self._runner is None:
            raise EngineLostError("the TensorRT-LLM runner could not be rebuilt after a failure")
        return self._runner

    def _replace_runner(self, failed: _Runner) -> None:
        """Shut the failed executor down and build a fresh runner. If that fails the engine is
        lost for good."""
        self._runner = None
        try:
            failed.session.shutdown()
        except Exception:
            log.warning("shutting down the failed TensorRT-LLM executor failed", exc_info=True)
        try:
            self._runner = self._make_runner()
        except Exception:
            log.critical("cannot rebuild the TensorRT-LLM runner", exc_info=True)
            return
        log.warning("rebuilt the TensorRT-LLM runner after a failed call")


def _executor_bindings() -> Any:
    """tensorrt_llm.bindings.executor, imported only when the engine runs."""
    from tensorrt_llm.bindings import executor

    return executor


def _through_sot(prompt: list[int], sot: int) -> list[int]:
    """The prompt up to <|startoftranscript|>: its last logits are Whisper's no-speech step."""
    return prompt[: prompt.index(sot) + 1]


def _sampling(params: GenerationParams) -> dict[str, Any]:
    """SamplingConfig's keywords; suppress_blank's end-of-text half as `min_tokens=1`
    (docs/trtllm.md#generate)."""
    blank = {"min_tokens": 1} if params.suppress_blank else {}
    if params.temperature == 0:
        return {"top_k": 1, **blank}  # greedy
    # Sample the whole distribution (top_k 0 with top_p unset would mean greedy).
    return {"top_k": 0, "top_p": 1.0, "temperature": params.temperature, **blank}
