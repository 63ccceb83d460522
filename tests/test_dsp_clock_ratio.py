"""HwConfig.dsp_clock_ratio (issue 25): validated, and invisible in the ids of 1x configs."""

import pytest

from zynqnn.hw.config import PRESETS, ConfigError, HwConfig, get_config

#: The ids of the presets before the field existed: build directories, recorded figures and
#: the hardware's config readback depend on them.
IDS_BEFORE = {
    "pynq_z2": "16x16i8-e100bf4c",
    "pynq_z2_int16": "12x12i16-1879a6ab",
    "tiny": "4x4i8-a1b8e8e0",
    "tiny16": "4x4i16-064c6969",
}


@pytest.mark.parametrize("name", sorted(IDS_BEFORE))
def test_existing_ids_unchanged(name):
    cfg = get_config(name)
    assert cfg.dsp_clock_ratio == 1
    assert cfg.config_id == IDS_BEFORE[name]
    assert "dsp_clock_ratio" not in cfg.canonical_json()
    assert "dsp_clock_ratio" not in cfg.to_dict()


def test_ratio_two_is_a_parameter():
    one = get_config("pynq_z2")
    two = one.replace(dsp_clock_ratio=2)
    assert two.config_id != one.config_id and two.config_id.startswith("16x16i8-")
    assert '"dsp_clock_ratio":2' in two.canonical_json()
    again = HwConfig.from_dict(two.to_dict())
    assert again == two and again.config_id == two.config_id
    # A 1x dict written before the field existed, or with it at its default, reads back alike.
    assert HwConfig.from_dict({**one.to_dict(), "dsp_clock_ratio": 1}) == one
    assert two.macs_per_cycle == 2 * one.macs_per_cycle == 512
    assert PRESETS["pynq_z2_2x"].replace(name="pynq_z2") == two


@pytest.mark.parametrize("value, message", [
    (3, "dsp_clock_ratio = 3: must be 1 or 2"),
    (0, "dsp_clock_ratio = 0: must be 1 or 2"),
    (True, "dsp_clock_ratio = True: must be an int"),
    (2.0, "dsp_clock_ratio = 2.0: must be an int"),
])
def test_validation(value, message):
    with pytest.raises(ConfigError) as e:
        get_config("pynq_z2").replace(dsp_clock_ratio=value)
    assert message in str(e.value)


def test_fast_clock_within_the_clock_buffer():
    get_config("pynq_z2").replace(dsp_clock_ratio=2, clock_mhz=232.0)
    with pytest.raises(ConfigError, match=r"DSP clock \(480 MHz\) must not exceed 464 MHz"):
        get_config("pynq_z2").replace(dsp_clock_ratio=2, clock_mhz=240.0)
