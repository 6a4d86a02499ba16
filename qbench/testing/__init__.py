"""qbench.testing: what tests and benchmarks build: a tiny random Qwen2.5-VL."""
