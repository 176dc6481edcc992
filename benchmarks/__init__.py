"""Benchmarks: whisperwire side by side with faster-whisper and the anchors of performance.md."""
