"""Build TensorRT-LLM Whisper engines from OpenAI checkpoints (see README.md here).

`build.build_engines` is what the Modal build function calls (through `volume`); the server
reads only `manifest` (`check_engine_dir` at startup). `python -m engine_builder --help` is the
command-line face of both. Import the module you need: importing this package imports nothing
else, so the server's manifest check does not load the build machinery, and only
`engine_builder.convert` (the checkpoint conversion) imports torch.
"""
