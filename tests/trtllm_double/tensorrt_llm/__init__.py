"""A test double of the `tensorrt_llm` package: only `runtime.ModelRunnerCpp`, for Whisper.

Importable when `tests/trtllm_double` is on sys.path; the dist-info beside it makes
`importlib.metadata.version("tensorrt_llm")` answer 1.2.1 as the real wheel would.
"""

__version__ = "1.2.1"
