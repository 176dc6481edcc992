"""The double's `tensorrt_llm.bindings`: only `executor`, the Executor behind ModelRunnerCpp."""
