"""Benchmarks: whisperwire beside faster-whisper and the anchors of docs/performance.md."""
