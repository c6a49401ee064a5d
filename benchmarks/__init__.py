"""Benchmarks of pixelbert's hot paths and training throughput (see benchmarks/README_SECTION.md)."""
