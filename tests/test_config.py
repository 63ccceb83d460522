"""The hardware configuration: validation names the field, ids are stable and parameter-bound."""

import dataclasses

import pytest

from zynqnn.hw.config import PRESETS, ConfigError, HwConfig, get_config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_and_round_trip(name):
    cfg = get_config(name)
    assert cfg.name == name
    again = HwConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.config_id == cfg.config_id


def test_config_id_depends_on_parameters_not_label():
    cfg = get_config("pynq_z2")
    assert cfg.replace(name="other").config_id == cfg.config_id
    ids = {cfg.config_id}
    for f, v in [("cols", 8), ("rows", 8), ("act_buffer_depth", 8192), ("clock_mhz", 100.0),
                 ("requant_lanes", 8), ("dsp_packing", False)]:
        ids.add(cfg.replace(**{f: v}).config_id)
    assert len(ids) == 7
    assert cfg.config_id.startswith("16x16i8-")
    assert 0 <= cfg.config_hash32 < 2**32


def test_preset_ids_are_distinct():
    assert len({c.config_id for c in PRESETS.values()}) == len(PRESETS)


@pytest.mark.parametrize("field, value, message", [
    ("rows", 0, "rows = 0: must be between 1 and 64"),
    ("cols", 65, "cols = 65: must be between 1 and 64"),
    ("operand_bits", 12, "operand_bits = 12: must be one of 8, 16"),
    ("acc_bits", 24, "acc_bits = 24: must be one of 32, 48"),
    ("requant_lanes", 5, "requant_lanes = 5: must be >= 1 and divide cols (16)"),
    ("act_buffer_depth", 1000, "act_buffer_depth = 1000: must be a power of two"),
    ("max_kernel", 4, "max_kernel = 4: must be one of 1, 3, 5, 7"),
    ("axi_data_bits", 128, "axi_data_bits = 128: must be one of 32, 64"),
    ("clock_mhz", 500, "clock_mhz = 500: must be a number between 10 and 250"),
    ("rows", 2.5, "rows = 2.5: must be an int"),
])
def test_validation_names_the_field(field, value, message):
    with pytest.raises(ConfigError) as e:
        get_config("pynq_z2").replace(**{field: value})
    assert message in str(e.value)
    assert str(e.value).startswith(f"HwConfig.{field}")


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="acc_bits = 32: must be at least 37 for 16-bit"):
        HwConfig(operand_bits=16, acc_bits=32, dsp_packing=False)
    with pytest.raises(ConfigError, match="dsp_packing = True: only applies to the 8-bit build"):
        HwConfig(operand_bits=16, acc_bits=48)
    with pytest.raises(ConfigError, match="weight_buffer_depth = 16: must hold at least one"):
        HwConfig(rows=32, weight_buffer_depth=16)


def test_unknown_preset_and_field():
    with pytest.raises(ConfigError, match="unknown hardware config 'pynq'; presets: pynq_z2"):
        get_config("pynq")
    with pytest.raises(ConfigError, match="unknown field.*colls"):
        HwConfig.from_dict({"colls": 3})


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_config("tiny").rows = 3
