"""A strict stand-in for TensorRT-LLM's `trtllm-build` (which needs an NVIDIA GPU).

It accepts only the flags (and values) the real tool accepts that the builder may pass,
rejects anything else as argparse does (exit 2), requires a converted checkpoint
(`config.json` + `rank0.safetensors`) in --checkpoint_dir, records its argv and working
directory as one JSON line in $FAKE_TRTLLM_BUILD_LOG, and writes `config.json` +
`rank0.engine` into --output_dir as the real tool does. Setting $FAKE_TRTLLM_BUILD_FAIL to a
checkpoint architecture ("WhisperEncoder" / "DecoderModel") makes that build fail.
Stdlib only: it runs under whatever interpreter the wrapper names.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import NoReturn

PLUGIN_VALUES = ["auto", "float16", "float32", "bfloat16", "disable"]
FEATURE_VALUES = ["enable", "disable"]
PLUGINS = ["--bert_attention_plugin", "--gpt_attention_plugin", "--gemm_plugin", "--moe_plugin"]
LIMITS = [
    "--max_batch_size",
    "--max_beam_width",
    "--max_seq_len",
    "--max_input_len",
    "--max_encoder_input_len",
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trtllm-build", allow_abbrev=False)
    parser.add_argument("--checkpoint_dir", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--kv_cache_type", choices=["continuous", "paged", "disabled"])
    parser.add_argument("--remove_input_padding", choices=FEATURE_VALUES)
    for plugin in PLUGINS:
        parser.add_argument(plugin, choices=PLUGIN_VALUES)
    for limit in LIMITS:
        parser.add_argument(limit, type=int)
    return parser


def _fail(message: str) -> NoReturn:
    print(f"[fake trtllm-build] error: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    log_path = os.environ.get("FAKE_TRTLLM_BUILD_LOG")
    if not log_path:
        _fail("FAKE_TRTLLM_BUILD_LOG is not set")
    args = _parser().parse_args()
    checkpoint_dir = Path(args.checkpoint_dir)
    config_path = checkpoint_dir / "config.json"
    if not config_path.is_file():
        _fail(f"{config_path} does not exist")
    if not (checkpoint_dir / "rank0.safetensors").is_file():
        _fail(f"{checkpoint_dir}/rank0.safetensors does not exist")
    config = json.loads(config_path.read_text())
    with open(log_path, "a") as log:
        log.write(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd()}) + "\n")
    print(f"[fake trtllm-build] building {config['architecture']}")
    if os.environ.get("FAKE_TRTLLM_BUILD_FAIL") == config["architecture"]:
        _fail("simulated build failure")
    build_config = {
        key: value
        for key, value in vars(args).items()
        if key not in ("checkpoint_dir", "output_dir") and value is not None
    }
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    engine_config = {"version": "fake", "pretrained_config": config, "build_config": build_config}
    (output_dir / "config.json").write_text(json.dumps(engine_config, indent=2))
    (output_dir / "rank0.engine").write_bytes(b"fake serialized engine")


if __name__ == "__main__":
    main()
