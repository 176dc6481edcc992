"""Command line: `python -m engine_builder {build,convert,check} ...`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from engine_builder.build import PRECISIONS, build_engines
from engine_builder.catalog import model_names
from engine_builder.environment import DEFAULT_TRTLLM_VERSION, installed_trtllm_version
from engine_builder.errors import EngineBuilderError
from engine_builder.manifest import check_engine_dir
from engine_builder.trtllm_build import BuildOptions

_LOGGER = logging.getLogger("engine_builder")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine_builder",
        description="Build TensorRT-LLM Whisper engines from OpenAI checkpoints.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_build(commands.add_parser("build", help="download, convert and build engines"))
    _add_convert(commands.add_parser("convert", help="only convert a .pt to a TRT-LLM checkpoint"))
    _add_check(commands.add_parser("check", help="verify an engine directory (server startup)"))
    return parser


def _add_build(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, choices=model_names())
    parser.add_argument("--precision", default="float16", choices=list(PRECISIONS))
    parser.add_argument("--out-root", type=Path, required=True, help="parent of build dirs")
    parser.add_argument("--gpu", help="GPU name, used when nvidia-smi cannot tell")
    parser.add_argument("--trtllm-version", help="default: installed tensorrt_llm, else pin")
    parser.add_argument("--download-dir", type=Path, help="default: <out-root>/downloads")
    parser.add_argument("--max-batch-size", type=int, default=BuildOptions.max_batch_size)
    parser.add_argument("--max-beam-width", type=int, default=BuildOptions.max_beam_width)
    parser.add_argument(
        "--max-seq-len",
        type=int,
        default=BuildOptions.max_seq_len,
        help="decoder prompt + generated tokens",
    )
    parser.add_argument(
        "--max-input-len",
        type=int,
        default=BuildOptions.max_input_len,
        help="decoder prompt tokens",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if it exists")


def _add_convert(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="OpenAI .pt file")
    parser.add_argument("--out", type=Path, required=True, help="TRT-LLM checkpoint dir")
    parser.add_argument("--precision", default="float16", choices=list(PRECISIONS))


def _add_check(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("engine_dir", type=Path)
    parser.add_argument("--gpu", required=True, help="GPU name of this machine")
    parser.add_argument(
        "--trtllm-version", default=installed_trtllm_version() or DEFAULT_TRTLLM_VERSION
    )


def _run(args: argparse.Namespace) -> str:
    """Do the command; return what to print on stdout."""
    if args.command == "build":
        return str(
            build_engines(
                args.model,
                args.precision,
                args.out_root,
                gpu=args.gpu,
                max_batch_size=args.max_batch_size,
                max_beam_width=args.max_beam_width,
                max_seq_len=args.max_seq_len,
                max_input_len=args.max_input_len,
                force=args.force,
                trtllm_version=args.trtllm_version,
                download_dir=args.download_dir,
            )
        )
    if args.command == "convert":
        from engine_builder.convert import write_trtllm_checkpoint  # torch only when needed

        precision = PRECISIONS[args.precision]
        write_trtllm_checkpoint(
            args.checkpoint, args.out, dtype=precision.dtype, quant_algo=precision.quant_algo
        )
        return str(args.out)
    manifest = check_engine_dir(args.engine_dir, trtllm_version=args.trtllm_version, gpu=args.gpu)
    return manifest.to_json().rstrip()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        print(_run(args))
    except EngineBuilderError as error:
        _LOGGER.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
