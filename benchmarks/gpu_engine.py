"""Issue 11 on a real GPU: the torch engine's speed and accuracy, side by side with its anchors.

Sections (pick with --sections; each result is written as soon as it exists, so a run that
hits its time limit keeps what it measured):

- throughput: random weights of the large-v3 and large-v3-turbo shapes (fp16), one 30 s
  window per item and exactly 25 new tokens (end-of-text suppressed), batch 1/8/32/64/128.
  Ours (encoder and decoder timed apart) against transformers' WhisperForConditionalGeneration
  `generate` with its default (eager) cache and with its static cache (compiled decoder
  step), in the same process. RTFx = items x 7.4 s / wall time (25 tokens ~ one 7.4 s
  LibriSpeech utterance).
- alone: one utterance (batch 1, 25 tokens), engine milliseconds, median of 20.
- wer: real tiny.en and base weights (CTranslate2 directories in --models-dir) on the GPU
  through the speech pipeline, on the project's clips and a 90 s long-form file, against the
  CTranslate2 engine on the same clips (on this machine's CPU, where ctranslate2 is present).

    python -m benchmarks.gpu_engine --sections throughput,alone --out /tmp/gpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from whisperwire.server.engines.torch_whisper.decoding import WhisperDecoder
from whisperwire.server.engines.torch_whisper.logit_rules import SpecialTokens
from whisperwire.server.engines.torch_whisper.model import ModelDimensions, Whisper

UTTERANCE_SECONDS = 7.4
NEW_TOKENS = 25
BATCHES = (1, 8, 32, 64, 128)
STATIC_BATCHES = (1, 32)

_LARGE_V3 = ModelDimensions(
    n_mels=128,
    n_audio_ctx=1500,
    n_audio_state=1280,
    n_audio_head=20,
    n_audio_layer=32,
    n_vocab=51866,
    n_text_ctx=448,
    n_text_state=1280,
    n_text_head=20,
    n_text_layer=32,
)
SHAPES = {
    "large-v3": _LARGE_V3,
    "large-v3-turbo": ModelDimensions(**{**_LARGE_V3.__dict__, "n_text_layer": 4}),
    # A few-layer model of the same vocabulary: a smoke test of this script on a CPU.
    "smoke": ModelDimensions(
        **{
            **_LARGE_V3.__dict__,
            "n_audio_layer": 2,
            "n_text_layer": 2,
            "n_audio_state": 256,
            "n_text_state": 256,
            "n_audio_head": 4,
            "n_text_head": 4,
        }
    ),
}
DEVICE = "cuda"
DTYPE = torch.float16


def synchronize() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


# large-v3's vocabulary (100 languages): ids as OpenAI's tokenizer assigns them.
LARGE_V3_SPECIAL = SpecialTokens(
    eot=50257,
    sot=50258,
    no_speech=50363,
    no_timestamps=50364,
    timestamp_begin=50365,
    language_ids=tuple(range(50259, 50359)),
    control_ids=(50360, 50359, 50258, 50362, 50361, 50363),
    blank_ids=(220, 50257),
)
PROMPT = [50258, 50259, 50360, 50364]  # sot, en, transcribe, notimestamps


# ---- helpers --------------------------------------------------------------------------------


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall milliseconds of `repeats` synchronised calls (after one warm-up)."""
    result = fn()
    times = []
    for _ in range(repeats):
        synchronize()
        started = time.perf_counter()
        result = fn()
        synchronize()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def random_model(dims: ModelDimensions, dtype: torch.dtype) -> Whisper:
    torch.manual_seed(0)
    model = Whisper(dims)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.02)
        model.encoder.positional_embedding.normal_(0.0, 0.02)
    return model.to(DEVICE, dtype).eval()


def empty_cache() -> None:
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def rtfx(batch: int, milliseconds: float) -> float:
    return batch * UTTERANCE_SECONDS / (milliseconds / 1000)


class Results:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        self.data.setdefault("environment", environment())

    def put(self, section: str, key: str, value: Any) -> None:
        self.data.setdefault(section, {})[key] = value
        self.path.write_text(json.dumps(self.data, indent=2))
        print(section, key, json.dumps(value), flush=True)


def environment() -> dict[str, Any]:
    if DEVICE != "cuda":
        return {"device": DEVICE, "torch": torch.__version__}
    props = torch.cuda.get_device_properties(0)
    return {
        "gpu": props.name,
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# ---- ours -----------------------------------------------------------------------------------


def decoder_for(model: Whisper, max_rows: int, compile_encoder: bool = False) -> WhisperDecoder:
    """One decoder serves every batch size up to max_rows (its graphs are captured per bucket)."""
    return WhisperDecoder(
        model,
        LARGE_V3_SPECIAL,
        max_rows=max_rows,
        use_cuda_graphs=DEVICE == "cuda",
        compile_encoder=compile_encoder,
    )


def ours(decoder: WhisperDecoder, batch: int, repeats: int) -> dict[str, Any]:
    mel = torch.randn(batch, decoder.model.dims.n_mels, 3000)

    def generate() -> list[Any]:
        return decoder.generate(
            decoder.encode(mel),
            [PROMPT] * batch,
            max_new_tokens=NEW_TOKENS,
            temperature=0.0,
            beam_size=1,
            suppress_tokens=(LARGE_V3_SPECIAL.eot,),
            suppress_blank=False,
            no_speech=True,
        )

    encoder_ms, _ = timed(lambda: decoder.encode(mel), repeats)
    total_ms, decoded = timed(generate, repeats)
    lengths = sorted({len(d.tokens) for d in decoded})
    return {
        "encoder_ms": round(encoder_ms, 2),
        "decoder_ms": round(total_ms - encoder_ms, 2),
        "total_ms": round(total_ms, 2),
        "decode_ms_per_token": round((total_ms - encoder_ms) / NEW_TOKENS, 3),
        "rtfx": round(rtfx(batch, total_ms), 1),
        "tokens_per_item": lengths,
    }


# ---- transformers ---------------------------------------------------------------------------


def hf_model(dims: ModelDimensions) -> Any:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(
        vocab_size=dims.n_vocab,
        num_mel_bins=dims.n_mels,
        encoder_layers=dims.n_audio_layer,
        encoder_attention_heads=dims.n_audio_head,
        decoder_layers=dims.n_text_layer,
        decoder_attention_heads=dims.n_text_head,
        d_model=dims.n_audio_state,
        encoder_ffn_dim=4 * dims.n_audio_state,
        decoder_ffn_dim=4 * dims.n_text_state,
        max_source_positions=dims.n_audio_ctx,
        max_target_positions=dims.n_text_ctx,
        decoder_start_token_id=PROMPT[0],
        eos_token_id=LARGE_V3_SPECIAL.eot,
        pad_token_id=LARGE_V3_SPECIAL.eot,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    return model.to(DEVICE, DTYPE).eval()


def transformers_generate(model: Any, batch: int, repeats: int, static: bool) -> dict[str, Any]:
    from transformers import GenerationMixin

    features = torch.randn(batch, model.config.num_mel_bins, 3000, device=DEVICE, dtype=DTYPE)
    prompt = torch.tensor([PROMPT] * batch, device=DEVICE)
    extra = {"cache_implementation": "static"} if static else {}

    def generate() -> Any:
        # The generic generate (Whisper's own adds long-form and language logic we don't time).
        return GenerationMixin.generate(
            model,
            input_features=features,
            decoder_input_ids=prompt,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            num_beams=1,
            **extra,
        )

    with torch.inference_mode():
        first_started = time.perf_counter()
        generate()
        synchronize()
        first_ms = (time.perf_counter() - first_started) * 1000
        encoder_ms, _ = timed(lambda: model.model.encoder(features), repeats)
        total_ms, out = timed(generate, repeats)
    return {
        "encoder_ms": round(encoder_ms, 2),
        "total_ms": round(total_ms, 2),
        "rtfx": round(rtfx(batch, total_ms), 1),
        "first_call_ms": round(first_ms, 1),
        "new_tokens": int(out.shape[1] - len(PROMPT)),
    }


# ---- sections -------------------------------------------------------------------------------


def throughput(
    results: Results, shapes: list[str], batches: list[int], with_hf: bool, compiled: bool
) -> None:
    variant = "ours-compiled-encoder" if compiled else "ours"
    for shape in shapes:
        dims = SHAPES[shape]
        model = random_model(dims, DTYPE)
        started = time.perf_counter()
        decoder = decoder_for(model, max(batches), compile_encoder=compiled)
        if compiled:  # compile (once, dynamic batch) before timing
            decoder.encode(torch.randn(2, dims.n_mels, 3000))
            synchronize()
        results.put(
            "throughput", f"{shape}/{variant}/setup_s", round(time.perf_counter() - started, 2)
        )
        for batch in batches:
            results.put(
                "throughput", f"{shape}/{variant}/b{batch}", ours(decoder, batch, repeats=3)
            )
        del model, decoder
        empty_cache()
        if not with_hf:
            continue
        reference = hf_model(dims)
        for batch in batches:
            results.put(
                "throughput",
                f"{shape}/transformers-eager/b{batch}",
                transformers_generate(reference, batch, repeats=3, static=False),
            )
        for batch in [b for b in STATIC_BATCHES if b in batches]:
            try:
                figures = transformers_generate(reference, batch, repeats=3, static=True)
            except Exception as error:  # report, don't lose the rest of the run
                figures = {"error": f"{type(error).__name__}: {error}"[:500]}
            results.put("throughput", f"{shape}/transformers-static/b{batch}", figures)
        del reference
        empty_cache()


def alone(results: Results, shapes: list[str]) -> None:
    for shape in shapes:
        model = random_model(SHAPES[shape], DTYPE)
        results.put("alone", shape, ours(decoder_for(model, 1), 1, repeats=20))
        del model
        empty_cache()


def wer_section(results: Results, models_dir: Path) -> None:
    from benchmarks.gpu_wer import compare_engines

    for name in ("tiny.en", "base"):
        directory = models_dir / name
        if not (directory / "model.bin").is_file():
            results.put("wer", name, {"skipped": f"{directory}/model.bin not present"})
            continue
        results.put("wer", name, asyncio.run(compare_engines(name, directory)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sections", default="throughput,alone,wer")
    parser.add_argument("--shapes", default="large-v3-turbo,large-v3")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--no-transformers", action="store_true")
    parser.add_argument("--compile-encoder", action="store_true", help="torch.compile our encoder")
    parser.add_argument("--models-dir", type=Path, default=Path("/root/w/models"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda", help="cpu: a smoke test of this script")
    args = parser.parse_args()
    global DEVICE, DTYPE
    DEVICE, DTYPE = args.device, torch.float16 if args.device == "cuda" else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = True
    results = Results(args.out)
    shapes = args.shapes.split(",")
    sections = args.sections.split(",")
    if "alone" in sections:
        alone(results, shapes)
    if "throughput" in sections:
        batches = [int(b) for b in args.batches.split(",")]
        throughput(results, shapes, batches, not args.no_transformers, args.compile_encoder)
    if "wer" in sections:
        wer_section(results, args.models_dir)


if __name__ == "__main__":
    main()
