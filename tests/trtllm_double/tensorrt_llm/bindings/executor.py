"""The double's `tensorrt_llm.bindings.executor`: the Executor behind `ModelRunnerCpp.session`
and the request and response types it takes and gives, as far as Whisper uses them.

Modelled on TensorRT-LLM's C++ executor (`cpp/tensorrt_llm/executor/executorImpl.cpp`) and its
Python bindings (docs/trtllm.md#executor); a violation of the contract raises
`ContractViolation`, an option the double cannot emulate NotImplementedError, a wrong signature
TypeError. As strict as the real one where the adapter depends on it:
- `enqueue_requests` returns one id per request; requests beyond `max_batch_size` wait in the
  queue, and a queued request whose beam width differs from the one the active requests run
  at waits (and holds the queue behind it) until they have all finished;
- a request the executor refuses at admission (prompt over max_input_len, prompt + max_tokens
  over max_seq_len, beam width over max_beam_width, logits without `gather_generation_logits`)
  gets an error response, and only it;
- `await_responses(timeout=...)` returns every response ready, `await_responses(id, timeout)`
  that id's, `await_responses(ids, timeout)` a list per id; each response is returned once;
  nothing ready within the timeout is an empty list; awaiting an id whose final response was
  already returned gives an error response ("has already been processed and was terminated");
  a wait without a timeout for something that can never come would block forever, and raises;
- `cancel_request(id)` ends an active request at the next iteration with a final response
  (finish reason CANCELLED, the tokens decoded so far); a queued one is cancelled once admitted;
  an id already terminated is ignored;
- after `shutdown()` every call raises ("Shutdown called");
- `cum_log_probs` and `log_probs` come back only with `OutputConfig(return_log_probs=True)`;
  `output_token_ids` hold the prompt unless `exclude_input_from_output`, never end-of-text.

Time is deterministic: the real executor loops on a thread of its own, here every
`await_responses` runs the loop: one iteration per call with a timeout, as many as the awaited
responses need without one. One iteration ends cancelled requests, admits queued ones (their
answer is computed then, by the runner's CTranslate2 model, batched per decoding parameters)
and decodes one token of every active request; a request is final after as many iterations as
it has tokens, end-of-text included.

Fault injection (the double's own): `fail_next_request(message)` gives the next admitted
request an error response; `fail_next_iteration(message)` fails every active request, as a
failed forward pass does; `raise_on_next_call(message)` makes the next executor call raise.
"""

from __future__ import annotations

import datetime
import enum
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch


class ContractViolation(ValueError):
    """A call that breaks the documented ModelRunnerCpp / Executor contract for Whisper."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ContractViolation(message)


class FinishReason(enum.Enum):
    NOT_FINISHED = 0
    END_ID = 1
    STOP_WORDS = 2
    LENGTH = 3
    TIMED_OUT = 4
    CANCELLED = 5


# SamplingConfig's keyword arguments after beam_width; the double emulates the first four.
_EMULATED_SAMPLING = ("top_k", "top_p", "temperature", "min_tokens")
_OTHER_SAMPLING = (
    "top_p_min", "top_p_reset_ids", "top_p_decay", "seed", "beam_search_diversity_rate",
    "repetition_penalty", "presence_penalty", "frequency_penalty", "length_penalty",
    "early_stopping", "no_repeat_ngram_size", "num_return_sequences", "min_p",
    "beam_width_array",
)  # fmt: skip


class SamplingConfig:
    """`SamplingConfig(beam_width=1, *, top_k=None, ...)`: None leaves the runtime default."""

    def __init__(self, beam_width: int = 1, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(_EMULATED_SAMPLING) - set(_OTHER_SAMPLING))
        if unknown:
            raise TypeError(f"SamplingConfig() got unexpected keyword arguments {unknown}")
        not_emulated = sorted(k for k in _OTHER_SAMPLING if kwargs.get(k) is not None)
        if not_emulated:
            raise NotImplementedError(f"the double does not emulate {not_emulated}")
        _require(isinstance(beam_width, int) and beam_width >= 1, "beam_width must be >= 1")
        self.beam_width = beam_width
        self.top_k: int | None = kwargs.get("top_k")
        self.top_p: float | None = kwargs.get("top_p")
        self.temperature: float | None = kwargs.get("temperature")
        self.min_tokens: int | None = kwargs.get("min_tokens")

    def as_kwargs(self) -> dict[str, Any]:
        """ModelRunnerCpp.generate's sampling keywords for the same configuration."""
        named = {k: getattr(self, k) for k in _EMULATED_SAMPLING}
        return {"num_beams": self.beam_width} | {k: v for k, v in named.items() if v is not None}


@dataclass(frozen=True)
class OutputConfig:
    return_log_probs: bool = False
    return_context_logits: bool = False
    return_generation_logits: bool = False
    exclude_input_from_output: bool = False
    return_encoder_output: bool = False
    return_perf_metrics: bool = False
    additional_model_outputs: object = None


# Request's keyword arguments (all keyword-only after input_token_ids and max_tokens) that the
# double accepts; any other known one must keep its default.
_REQUEST_KWARGS = frozenset(
    {
        "streaming", "sampling_config", "output_config", "end_id", "pad_id", "bad_words",
        "encoder_input_features", "encoder_output_length", "priority", "client_id",
    }
)  # fmt: skip
_REQUEST_DEFAULTED = frozenset(
    {
        "position_ids", "stop_words", "embedding_bias", "external_draft_tokens_config",
        "prompt_tuning_config", "multimodal_input", "multimodal_embedding", "mrope_config",
        "lora_config", "lookahead_config", "kv_cache_retention_config",
        "logits_post_processor_name", "logits_post_processor", "encoder_input_token_ids",
        "return_all_generated_tokens", "type", "context_phase_params", "cross_attention_mask",
        "num_return_sequences", "eagle_config", "skip_cross_attn_blocks",
        "guided_decoding_params", "language_adapter_uid", "allotted_time_ms", "cache_salt_id",
    }
)  # fmt: skip
_DEFAULT_PRIORITY = 0.5


class Request:
    """`Request(input_token_ids, max_tokens, *, ...)`, one decoder prompt and its options."""

    def __init__(self, input_token_ids: list[int], max_tokens: int, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - _REQUEST_KWARGS - _REQUEST_DEFAULTED)
        if unknown:
            raise TypeError(f"Request() got unexpected keyword arguments {unknown}")
        set_defaulted = sorted(
            k for k in _REQUEST_DEFAULTED & set(kwargs) if kwargs[k] not in (None, False, 1)
        )
        if set_defaulted:
            raise NotImplementedError(f"the double does not emulate {set_defaulted}")
        _require(
            isinstance(input_token_ids, list)
            and bool(input_token_ids)
            and all(isinstance(t, int) for t in input_token_ids),
            "input_token_ids must be a non-empty list of token ids",
        )
        _require(isinstance(max_tokens, int) and max_tokens >= 1, "max_tokens must be >= 1")
        self.input_token_ids = list(input_token_ids)
        self.max_tokens = max_tokens
        self.streaming: bool = kwargs.get("streaming", False)
        self.sampling_config: SamplingConfig = kwargs.get("sampling_config") or SamplingConfig()
        self.output_config: OutputConfig = kwargs.get("output_config") or OutputConfig()
        self.end_id: int | None = kwargs.get("end_id")
        self.pad_id: int | None = kwargs.get("pad_id")
        self.bad_words: list[list[int]] | None = kwargs.get("bad_words")
        self.encoder_input_features: torch.Tensor | None = kwargs.get("encoder_input_features")
        self.encoder_output_length: int | None = kwargs.get("encoder_output_length")
        self.priority: float = kwargs.get("priority", _DEFAULT_PRIORITY)


@dataclass
class Result:
    is_final: bool
    output_token_ids: list[list[int]]
    finish_reasons: list[FinishReason]
    cum_log_probs: list[float] | None = None
    log_probs: list[list[float]] | None = None
    generation_logits: torch.Tensor | None = None  # [beams, steps, vocab]
    sequence_index: int = 0
    is_sequence_final: bool = True


class Response:
    """One request's answer: a Result, or an error message."""

    def __init__(self, request_id: int, result_or_error: Result | str) -> None:
        self._request_id = request_id
        self._answer = result_or_error

    @property
    def request_id(self) -> int:
        return self._request_id

    def has_error(self) -> bool:
        return isinstance(self._answer, str)

    @property
    def error_msg(self) -> str:
        if not isinstance(self._answer, str):
            raise RuntimeError("Cannot get the error message for a response without error")
        return self._answer

    @property
    def result(self) -> Result:
        if isinstance(self._answer, str):
            raise RuntimeError(
                f"Cannot get the result for a response with an error: {self._answer}"
            )
        return self._answer


class Model(Protocol):
    """What the executor needs from the double's runner: its limits, checks and answers."""

    limits: Any

    def check_request_features(self, request: Request) -> None: ...

    def answer(self, requests: list[Request]) -> list[Answer]: ...


@dataclass(frozen=True)
class Answer:
    """A request's whole decode, computed when it is admitted and revealed a step at a time."""

    beams: list[list[int]]  # generated tokens per beam, end-of-text excluded
    ended: bool  # beam 0 stopped at end-of-text
    mean_log_probs: list[float]  # per beam
    greedy: bool
    logits: torch.Tensor | None = None  # the probe step's [vocab], for generation_logits

    @property
    def steps(self) -> int:
        """Iterations to the final response: one per token, end-of-text included."""
        return max(1, len(self.beams[0]) + int(self.ended))


@dataclass
class _Active:
    request_id: int
    request: Request
    answer: Answer
    done: int = 0  # tokens decoded so far


@dataclass
class _Faults:
    request: str | None = None
    iteration: str | None = None
    call: str | None = None


class Executor:
    """The double's executor: a queue, at most `max_batch_size` active requests, responses."""

    def __init__(self, model: Model, *, max_batch_size: int, max_beam_width: int) -> None:
        self._model = model
        self.max_batch_size = max_batch_size
        self.max_beam_width = max_beam_width
        self.is_shut_down = False
        self.iterations = 0  # execution-loop iterations run (for tests)
        self._next_id = 1
        self._queued: deque[tuple[int, Request]] = deque()
        self._active: dict[int, _Active] = {}
        self._ready: dict[int, list[Response]] = {}
        self._terminated: set[int] = set()
        self._cancelled: set[int] = set()
        self._faults = _Faults()

    # --- fault injection (the double's own) ---------------------------------------------

    def fail_next_request(self, message: str) -> None:
        self._faults.request = message

    def fail_next_iteration(self, message: str) -> None:
        self._faults.iteration = message

    def raise_on_next_call(self, message: str) -> None:
        self._faults.call = message

    # --- the bound API ------------------------------------------------------------------

    def can_enqueue_requests(self) -> bool:
        return not self.is_shut_down

    @property
    def active_requests(self) -> int:
        """Requests decoding now (the double's own, for tests)."""
        return len(self._active)

    @property
    def idle(self) -> bool:
        """No request queued or active (the double's own, for ModelRunnerCpp.generate)."""
        return not (self._queued or self._active)

    def enqueue_request(self, request: Request) -> int:
        [request_id] = self.enqueue_requests([request])
        return request_id

    def enqueue_requests(self, requests: Sequence[Request]) -> list[int]:
        self._check_call()
        for request in requests:
            _require(isinstance(request, Request), "enqueue_requests takes Request objects")
            self._check_request(request)
        ids = self.reserve_ids(len(requests))
        self._queued.extend(zip(ids, requests, strict=True))
        return ids

    def await_responses(self, *args: Any, **kwargs: Any) -> Any:
        """`await_responses(timeout=None)`, `(id, timeout=None)` or `(ids, timeout=None)`."""
        self._check_call()
        target, timeout = _await_arguments(args, kwargs)
        if isinstance(target, list):
            return [self._await_one(request_id, timeout) for request_id in target]
        if target is not None:
            return self._await_one(target, timeout)
        return self._await_any(timeout)

    def get_num_responses_ready(self, id: int | None = None) -> int:
        self._check_call()
        if id is not None:
            return len(self._ready.get(id, []))
        return sum(len(responses) for responses in self._ready.values())

    def cancel_request(self, id: int) -> None:
        self._check_call()
        if id not in self._terminated:
            self._cancelled.add(id)

    def shutdown(self) -> None:
        self.is_shut_down = True
        self._queued.clear()
        self._active.clear()
        self._ready.clear()

    # --- what ModelRunnerCpp.generate uses ----------------------------------------------

    def reserve_ids(self, count: int) -> list[int]:
        first, self._next_id = self._next_id, self._next_id + count
        return list(range(first, first + count))

    def deliver(self, response: Response) -> None:
        self._ready.setdefault(response.request_id, []).append(response)

    # --- checks -------------------------------------------------------------------------

    def _check_call(self) -> None:
        if self.is_shut_down:
            raise RuntimeError("[TensorRT-LLM][ERROR] Assertion failed: Shutdown called")
        if self._faults.call is not None:
            message, self._faults.call = self._faults.call, None
            raise RuntimeError(message)

    def _check_request(self, request: Request) -> None:
        _require(not request.streaming, "the double does not stream")
        limits = self._model.limits
        for name, value in (("end_id", request.end_id), ("pad_id", request.pad_id)):
            _require(
                value is not None and 0 <= value < limits.vocab_size, f"{name} must be a token id"
            )
        self._model.check_request_features(request)
        if request.bad_words is not None:
            _require(
                isinstance(request.bad_words, list)
                and all(isinstance(w, list) and w for w in request.bad_words),
                "bad_words is a list of non-empty token-id lists",
            )
            if any(len(word) != 1 for word in request.bad_words):
                raise NotImplementedError("the double bans single tokens only")

    def _refusal(self, request: Request) -> str | None:
        """Why admission refuses the request (its error response), or None."""
        limits = self._model.limits
        prompt = len(request.input_token_ids)
        if prompt > limits.max_input_len:
            return (
                f"Prompt length ({prompt}) exceeds maximum input length ({limits.max_input_len})."
            )
        if prompt + request.max_tokens > limits.max_seq_len:
            return (
                f"Prompt length + number of requested output tokens ({prompt} + "
                f"{request.max_tokens}) exceeds maximum sequence length ({limits.max_seq_len})."
            )
        beam = request.sampling_config.beam_width
        if beam > self.max_beam_width:
            return f"beam width {beam} exceeds max_beam_width {self.max_beam_width}"
        if request.output_config.return_generation_logits and not getattr(
            self._model, "gather_generation_logits", False
        ):
            return (
                "To return generation logits, gather_generation_logits must be enabled in "
                "ExecutorConfig"
            )
        return None

    # --- awaiting -----------------------------------------------------------------------

    def _await_one(self, request_id: int, timeout: datetime.timedelta | None) -> list[Response]:
        if request_id in self._terminated:
            message = f"ReqId {request_id} has already been processed and was terminated."
            return [Response(request_id, message)]
        if timeout is not None:
            self._iterate()
        else:
            while request_id not in self._ready:
                _require(
                    self._can_answer(request_id),
                    f"await_responses({request_id}) without a timeout would block forever",
                )
                self._iterate()
        return self._take(request_id)

    def _await_any(self, timeout: datetime.timedelta | None) -> list[Response]:
        if timeout is not None:
            self._iterate()
        else:
            while not self._ready:
                _require(
                    bool(self._queued or self._active),
                    "await_responses() without a timeout would block forever",
                )
                self._iterate()
        return [r for request_id in list(self._ready) for r in self._take(request_id)]

    def _can_answer(self, request_id: int) -> bool:
        return request_id in self._active or any(i == request_id for i, _ in self._queued)

    def _take(self, request_id: int) -> list[Response]:
        responses = self._ready.pop(request_id, [])
        if any(r.has_error() or r.result.is_final for r in responses):
            self._terminated.add(request_id)
        return responses

    # --- the execution loop -------------------------------------------------------------

    def _iterate(self) -> None:
        self.iterations += 1
        if self._faults.iteration is not None:
            message, self._faults.iteration = self._faults.iteration, None
            self._fail_active(f"Encountered an error in forwardAsync function: {message}")
        self._end_cancelled()
        self._admit()
        for active in list(self._active.values()):
            active.done += 1
            if active.done >= active.answer.steps:
                self._finish(
                    active, FinishReason.END_ID if active.answer.ended else FinishReason.LENGTH
                )

    def _fail_active(self, message: str) -> None:
        for request_id in list(self._active):
            del self._active[request_id]
            self.deliver(Response(request_id, message))

    def _end_cancelled(self) -> None:
        for request_id in [i for i in self._active if i in self._cancelled]:
            self._cancelled.discard(request_id)
            self._finish(self._active[request_id], FinishReason.CANCELLED)

    def _admit(self) -> None:
        admitted: list[tuple[int, Request]] = []
        operating = self._operating_beam_width()
        while self._queued and len(self._active) + len(admitted) < self.max_batch_size:
            request_id, request = self._queued[0]
            beam = request.sampling_config.beam_width
            if operating is not None and beam != operating:
                break  # it waits (and the queue behind it) for the active requests to finish
            operating = beam
            self._queued.popleft()
            refusal = self._refusal(request) or self._injected_refusal()
            if refusal is not None:
                self.deliver(Response(request_id, refusal))
            else:
                admitted.append((request_id, request))
        if admitted:
            answers = self._model.answer([request for _, request in admitted])
            for (request_id, request), answer in zip(admitted, answers, strict=True):
                self._active[request_id] = _Active(request_id, request, answer)

    def _operating_beam_width(self) -> int | None:
        if not self._active:
            return None
        return next(iter(self._active.values())).request.sampling_config.beam_width

    def _injected_refusal(self) -> str | None:
        message, self._faults.request = self._faults.request, None
        return (
            None
            if message is None
            else f"Encountered an error when fetching new request: {message}"
        )

    def _finish(self, active: _Active, reason: FinishReason) -> None:
        del self._active[active.request_id]
        self.deliver(Response(active.request_id, _result(active, reason)))


def _result(active: _Active, reason: FinishReason) -> Result:
    request, answer = active.request, active.answer
    output = request.output_config
    beams = [tokens[: active.done] for tokens in answer.beams]
    steps = min(active.done, answer.steps)
    prompt = [] if output.exclude_input_from_output else request.input_token_ids
    result = Result(
        is_final=True,
        output_token_ids=[prompt + tokens for tokens in beams],
        finish_reasons=[reason] * len(beams),
    )
    if output.return_log_probs:
        # cum_log_probs include the end-of-text step; per-token log-probs are normalised over
        # the sampled top-k, so 0 under greedy decoding (docs/trtllm.md#outputs).
        result.cum_log_probs = [mean * steps for mean in answer.mean_log_probs]
        result.log_probs = [
            [0.0 if answer.greedy else mean] * len(tokens)
            for mean, tokens in zip(answer.mean_log_probs, beams, strict=True)
        ]
    if output.return_generation_logits:
        if answer.logits is None:
            raise NotImplementedError("the double has generation logits for probes only")
        result.generation_logits = answer.logits[None, None, :]
    return result


def _await_arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[int | list[int] | None, datetime.timedelta | None]:
    """The binding's three overloads: (timeout), (id, timeout), (ids, timeout)."""
    unknown = set(kwargs) - {"id", "ids", "timeout"}
    if unknown or len(args) > 2 or ("id" in kwargs and "ids" in kwargs):
        raise TypeError(f"await_responses(): incompatible arguments {args} {kwargs}")
    positional = list(args)
    target: Any = kwargs.get("id", kwargs.get("ids"))
    if positional and not isinstance(positional[0], datetime.timedelta) and target is None:
        target = positional.pop(0)
    timeout = kwargs.get("timeout", positional.pop(0) if positional else None)
    if timeout is not None and not isinstance(timeout, datetime.timedelta):
        raise TypeError("await_responses(): timeout is a datetime.timedelta")
    valid = (
        target is None
        or (isinstance(target, int) and not isinstance(target, bool))
        or (isinstance(target, list) and all(isinstance(i, int) for i in target))
    )
    if not valid:
        raise TypeError(f"await_responses(): incompatible request id(s) {target!r}")
    return target, timeout


__all__ = [
    "Answer",
    "ContractViolation",
    "Executor",
    "FinishReason",
    "OutputConfig",
    "Request",
    "Response",
    "Result",
    "SamplingConfig",
]
