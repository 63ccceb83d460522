"""cocotb testbenches and simulation infrastructure (installed as ``zynqnn.sim``)."""
