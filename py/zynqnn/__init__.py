"""zynqnn: bit-exact CNN inference on Zynq-7000 FPGAs."""
__version__ = "0.1.0"
