"""Bit-exact integer arithmetic of every quantization scheme the accelerator runs.

Each scheme has a vectorized numpy form and an integer-only "hardware form" (what the RTL
computes); tests prove the two equal and equal to the framework itself.
"""
