"""The double's `tensorrt_llm.runtime`: ModelRunnerCpp and the error it raises on misuse."""

from tensorrt_llm.runtime.model_runner_cpp import ContractViolation, ModelRunnerCpp

__all__ = ["ContractViolation", "ModelRunnerCpp"]
