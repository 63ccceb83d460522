"""Crafted program files: a real compiled program (``test_program.tiny_graph`` for the ``tiny``
config) with one field edited and the checksum recomputed the way ``zynqnn.program`` does.

The checksum only detects damage, so every field is checked after it: each crafted file must
fail ``zynqnn.load`` with one :class:`ProgramFileError`, one line naming the file and the field,
and ``zynqnn run`` on it must exit with status 1 and one error line without executing a single
command (``Machine.run`` is watched). The ids count the files (``07/NN-...``)."""

from __future__ import annotations

import json
import re
import zipfile

import numpy as np
import pytest
from test_program import tiny_graph

import zynqnn
from zynqnn import cli
from zynqnn import program as program_mod
from zynqnn.hw import isa
from zynqnn.machine import Machine
from zynqnn.program import HEADER, ProgramFileError, load

CB = isa.COMMAND_BYTES


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(the program file, its program.json, its command stream, the graph, inputs .npy)."""
    work = tmp_path_factory.mktemp("files")
    g = tiny_graph()
    model = zynqnn.compile(g, "tiny")
    path = model.save(work / "tiny.zqp")
    with zipfile.ZipFile(path) as z:
        doc = json.loads(z.read("program.json"))
        cmds = z.read("segment-0.bin")
    x = np.random.default_rng(1).normal(size=(2, 4, 8, 8)).astype(np.float32)
    np.save(work / "x.npy", x)
    return path, doc, cmds, g, work / "x.npy"


def craft(src, dst, doc=None, members=None, header=None, archive=None):
    """``src`` with ``doc(program_json)``, ``members(items)`` and ``header(h)`` applied, then
    re-checksummed like ``CompiledModel.save`` (``program._digest`` over the payload), and the
    written archive's bytes passed through ``archive(raw)``."""
    with zipfile.ZipFile(src) as z:
        items = {n: z.read(n) for n in z.namelist()}
    h = json.loads(items.pop(HEADER))
    d = json.loads(items["program.json"])
    if doc:
        doc(d)
    items["program.json"] = json.dumps(d).encode()  # NaN and Infinity as JSON allows them
    if members:
        members(items)
    if header:
        header(h)
    h["sha256"] = program_mod._digest(items)
    with zipfile.ZipFile(dst, "w") as z:
        z.writestr(HEADER, json.dumps(h))
        for n, data in items.items():
            z.writestr(n, data)
    if archive:
        dst.write_bytes(archive(dst.read_bytes()))
    return dst


def _directory(member: str, size: int | None = None, name: str | None = None):
    """An archive edit: ``member``'s central directory entry (what ``zipfile`` lists, before
    reading anything) made to declare ``size`` uncompressed bytes or renamed to ``name`` (of the
    same length)."""

    def edit(raw: bytes) -> bytes:
        out = bytearray(raw)
        at = out.find(b"PK\x01\x02")
        while at >= 0:
            n = int.from_bytes(out[at + 28:at + 30], "little")
            if out[at + 46:at + 46 + n] == member.encode():
                if size is not None:
                    out[at + 24:at + 28] = size.to_bytes(4, "little")
                if name is not None:
                    assert len(name) == n
                    out[at + 46:at + 46 + n] = name.encode()
                return bytes(out)
            at = out.find(b"PK\x01\x02", at + 46 + n)
        raise AssertionError(f"no {member} in the central directory")
    return edit


def _set(path: str, value):
    """An edit of program.json: ``path`` like ``input.addr`` or ``outputs.0.shape``."""
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]

    def edit(d):
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value(d[keys[-1]]) if callable(value) else value
    return edit


def _drop(path: str):
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]

    def edit(d):
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]
    return edit


def _command(kind, **fields):
    """A members edit: the first LOAD/STORE command of ``kind`` re-encoded with ``fields``."""

    def edit(items):
        raw = bytearray(items["segment-0.bin"])
        for i in range(len(raw) // CB):
            word = raw[i * CB:(i + 1) * CB]
            if isa.decode_opcode(bytes(word)) == kind:
                c = isa.LoadStore.from_bits(int.from_bytes(word, "little"))
                f = {k: int(getattr(c, k)) for k in ("opcode", "buffer", "bank", "sram_addr",
                                                     "line_words", "lines", "ddr_addr",
                                                     "ddr_stride")}
                f.update(fields)
                raw[i * CB:(i + 1) * CB] = isa.encode(isa.LoadStore, **f)
                items["segment-0.bin"] = bytes(raw)
                return
        raise AssertionError(f"no {kind!r} command")
    return edit


def _opcode(index, op):
    def edit(items):
        raw = bytearray(items["segment-0.bin"])
        at = (len(raw) // CB + index) * CB if index < 0 else index * CB
        raw[at] = (raw[at] & 0xF0) | op
        items["segment-0.bin"] = bytes(raw)
    return edit


def _member(name, fn):
    def edit(items):
        if fn is None:
            del items[name]
        else:
            items[name] = fn(items[name])
    return edit


NAN, INF = float("nan"), float("inf")

#: (id, craft() keyword arguments, what the message must say after "<file>: ").
CASES = [
    # tensor addresses: negative, huge, misaligned, wrong types, overlapping the image
    ("input-addr-negative", dict(doc=_set("input.addr", -64)),
     r"program\.json: input\.addr: -64 is negative"),
    ("output-addr-negative", dict(doc=_set("outputs.0.addr", -8)),
     r"program\.json: outputs\[0\]\.addr: -8 is negative"),
    ("input-addr-huge", dict(doc=_set("input.addr", 1 << 40)),
     r"program\.json: input\.addr: tensor 'xq' \(256 bytes at 0x10000000000\) ends at "
     r"0x10000000100, beyond ddr_bytes 0x3000"),
    ("output-addr-2^64", dict(doc=_set("outputs.0.addr", 1 << 64)),
     r"program\.json: outputs\[0\]\.addr: tensor 'c1' .* beyond ddr_bytes"),
    ("input-addr-past-end", dict(doc=_set("input.addr", lambda a: 0x3000 - 64)),
     r"program\.json: input\.addr: .* ends at 0x30c0, beyond ddr_bytes 0x3000"),
    ("input-addr-misaligned", dict(doc=_set("input.addr", lambda a: a + 4)),
     r"program\.json: input\.addr: 0x2004 is not a multiple of the 8-byte AXI beat"),
    ("input-addr-string", dict(doc=_set("input.addr", "8192")),
     r"program\.json: input\.addr: must be an integer, not a string '8192'"),
    ("input-addr-float", dict(doc=_set("input.addr", 8192.0)),
     r"program\.json: input\.addr: must be an integer, not a number 8192\.0"),
    ("input-addr-bool", dict(doc=_set("input.addr", True)),
     r"program\.json: input\.addr: must be an integer, not a boolean True"),
    ("input-addr-null", dict(doc=_set("input.addr", None)),
     r"program\.json: input\.addr: must be an integer, not null$"),
    ("input-addr-missing", dict(doc=_drop("input.addr")),
     r"program\.json: input\.addr: missing"),
    ("input-over-commands", dict(doc=_set("input.addr", 0)),
     r"program\.json: input\.addr: tensor 'xq' \[0x0, 0x100\) overlaps segment-0\.bin"),
    ("input-over-constants", dict(doc=_set("input.addr", 0x1000)),
     r"program\.json: input\.addr: .* overlaps segment-1\.bin"),
    ("output-over-commands", dict(doc=_set("outputs.0.addr", 0x100)),
     r"program\.json: outputs\[0\]\.addr: tensor 'c1' .* overlaps segment-0\.bin"),
    # tensor shapes, zero points, names
    ("input-shape-2d", dict(doc=_set("input.shape", [4, 8])),
     r"program\.json: input\.shape: must have 3 entries, not 2"),
    ("input-shape-zero", dict(doc=_set("input.shape", [4, 0, 8])),
     r"program\.json: input\.shape\[1\]: 0 is below 1"),
    ("input-shape-negative", dict(doc=_set("input.shape", [4, 8, -8])),
     r"program\.json: input\.shape\[2\]: -8 is below 1"),
    ("input-shape-vs-boundary", dict(doc=_set("input.shape", [4, 4, 8])),
     r"program\.json: boundary\.input_shape: \[4, 8, 8\] gives the network \[4, 8, 8\], but "
     r"input tensor 'xq' is \[4, 4, 8\]"),
    ("input-too-wide", dict(doc=_set("input.shape", [4, 8, 5000])),
     r"program\.json: input\.shape: width 5000 above max_width"),
    ("output-shape-vs-size", dict(doc=_set("outputs.0.shape", [4, 4, 2])),
     r"program\.json: boundary\.outputs\[0\]\.shape: \[4, 4, 4\] \(64 values\) does not fit "
     r"output tensor 'c1' \[4, 4, 2\] \(32 codes\)"),
    ("input-zero-point-range", dict(doc=_set("input.zero_point", 300)),
     r"program\.json: input\.zero_point: 300 is above 127"),
    ("input-signed-string", dict(doc=_set("input.signed", "yes")),
     r"program\.json: input\.signed: must be true or false, not a string 'yes'"),
    ("input-name-missing", dict(doc=_drop("input.name")),
     r"program\.json: input\.name: missing"),
    ("output-name-duplicate", dict(doc=_set("outputs.0.name", "xq")),
     r"program\.json: outputs\[0\]\.name: 'xq' names another tensor too"),
    ("outputs-missing", dict(doc=_drop("outputs")), r"program\.json: outputs: missing"),
    ("outputs-empty", dict(doc=_set("outputs", [])), r"program\.json: outputs: is empty"),
    ("outputs-object", dict(doc=_set("outputs", {"a": 1})),
     r"program\.json: outputs: must be a list, not an object"),
    # the command stream and the image
    ("cmd-addr-negative", dict(doc=_set("cmd_addr", -32)),
     r"program\.json: cmd_addr: -32 is negative"),
    ("cmd-addr-misaligned", dict(doc=_set("cmd_addr", 4)),
     r"program\.json: cmd_addr: 0x4 is not a multiple of the 8-byte AXI beat"),
    ("cmd-addr-outside", dict(doc=_set("cmd_addr", 0x2000)),
     r"program\.json: cmd_addr: 0x2000 is in no segment of the image"),
    ("command-count-zero", dict(doc=_set("command_count", 0)),
     r"program\.json: command_count: 0 is below 1"),
    ("command-count-huge", dict(doc=_set("command_count", 1 << 40)),
     r"program\.json: command_count: 1099511627776 is above 1048575"),
    ("command-count-past-segment", dict(doc=_set("command_count", lambda n: n + 1)),
     r"program\.json: command_count: 30 commands \(960 bytes from 0x0\) run past the end of "
     r"segment-0\.bin \(928 bytes\)"),
    ("commands-not-whole", dict(members=_member("segment-0.bin", lambda d: d[:-5])),
     r"program\.json: command_count: the command stream segment-0\.bin has 923 bytes, not a "
     r"whole number of 32-byte commands"),
    ("command-undefined-opcode", dict(members=_opcode(1, 7)),
     r"program\.json: commands: command 1: undefined opcode 7"),
    ("command-no-end", dict(members=_opcode(-1, isa.Opcode.NOP)),
     r"program\.json: commands: the last command \(28\) is not END"),
    ("store-beyond-image", dict(members=_command(isa.Opcode.STORE, ddr_addr=0x3000)),
     r"program\.json: commands: command \d+ \(STORE\): DDR bytes \[0x3000, 0x3[0-9a-f]+\) "
     r"beyond ddr_bytes 0x3000"),
    ("load-stride-beyond-image", dict(members=_command(isa.Opcode.LOAD, lines=2,
                                                       ddr_stride=0x8000_0000)),
     r"program\.json: commands: command \d+ \(LOAD\): DDR bytes \[0x[0-9a-f]+, "
     r"0x8000[0-9a-f]{4}\) beyond ddr_bytes 0x3000"),
    ("store-into-commands", dict(members=_command(isa.Opcode.STORE, ddr_addr=0x40)),
     r"program\.json: commands: command \d+ \(STORE\) writes into the command stream"),
    ("load-no-lines-wild-address", dict(members=_command(isa.Opcode.LOAD, lines=0,
                                                          ddr_addr=0xFFFF_FFF8)),
     r"program\.json: commands: command \d+ \(LOAD, no lines\): DDR address 0xfffffff8 beyond "
     r"ddr_bytes 0x3000"),
    ("store-no-lines-wild-address", dict(members=_command(isa.Opcode.STORE, lines=0,
                                                           ddr_addr=0x8000)),
     r"program\.json: commands: command \d+ \(STORE, no lines\): DDR address 0x8000 beyond "
     r"ddr_bytes 0x3000"),
    ("store-no-words-wild-address", dict(members=_command(isa.Opcode.STORE, line_words=0,
                                                           ddr_addr=0xFFFF_FFF8)),
     r"program\.json: commands: command \d+ \(STORE\): DDR bytes \[0xfffffff8, 0xfffffff8\) "
     r"beyond ddr_bytes 0x3000"),
    ("ddr-bytes-zero", dict(doc=_set("ddr_bytes", 0)),
     r"program\.json: ddr_bytes: 0 is below 1"),
    ("ddr-bytes-huge", dict(doc=_set("ddr_bytes", 1 << 33)),
     r"program\.json: ddr_bytes: 8589934592 is above 4294967295"),
    ("ddr-bytes-small", dict(doc=_set("ddr_bytes", 0x1000)),
     r"program\.json: segments\[1\]: segment-1\.bin \(776 bytes at 0x1000\) ends at 0x1308, "
     r"beyond ddr_bytes 0x1000"),
    ("segment-oversized", dict(members=_member("segment-1.bin", lambda d: d + bytes(1 << 13))),
     r"program\.json: segments\[1\]: segment-1\.bin \(8968 bytes at 0x1000\) ends at 0x3308, "
     r"beyond ddr_bytes 0x3000"),
    ("segment-negative", dict(doc=_set("segments.1", -4096)),
     r"program\.json: segments\[1\]: -4096 is negative"),
    ("segment-misaligned", dict(doc=_set("segments.1", 0x1001)),
     r"program\.json: segments\[1\]: 0x1001 is not a multiple of the 8-byte AXI beat"),
    ("segment-overlap", dict(doc=_set("segments.1", 0x100)),
     r"program\.json: segments\[1\]: segment 1 at 0x100 overlaps segment 0 \[0x0, 0x3a0\)"),
    ("segment-member-missing", dict(members=_member("segment-1.bin", None)),
     r"program\.json: segments\[1\]: its data segment-1\.bin is missing"),
    ("segment-member-unlisted", dict(members=lambda it: it.update({"segment-2.bin": b"x" * 8})),
     r"program\.json: segments: segment-2\.bin is in the archive but not in the image "
     r"\(2 segments\)"),
    # the archive's members, from its directory (nothing decompressed before these checks)
    ("member-unknown", dict(members=lambda it: it.update({"run.py": b"print(1)"})),
     r"run\.py: unknown member \(a program file holds zynqnn-program\.json, program\.json and "
     r"segment-<i>\.bin\)"),
    ("member-segment-name", dict(members=lambda it: it.update({"segment-01.bin": b"x" * 8})),
     r"segment-01\.bin: unknown member"),
    ("member-twice", dict(archive=_directory("segment-1.bin", name="segment-0.bin")),
     r"segment-0\.bin: the archive holds this member twice"),
    ("member-json-declares-2GB", dict(archive=_directory("program.json", size=0x7FFF_FFFF)),
     r"program\.json: 2147483647 bytes, more than the 268435456 a program file's program\.json "
     r"may hold"),
    ("member-segments-declare-5GB", dict(archive=lambda raw: _directory(
        "segment-0.bin", size=0xA000_0000)(_directory("segment-1.bin", size=0xA000_0000)(raw))),
     r"segment-1\.bin: the segments hold 5368709120 bytes, more than a 4 GB DDR image"),
    # per-command labels, scratch, statistics, layers, name
    ("labels-short", dict(doc=_set("labels", lambda v: v[:-1])),
     r"program\.json: labels: 28 labels for 29 commands"),
    ("labels-int", dict(doc=_set("labels.3", 7)),
     r"program\.json: labels\[3\]: must be a non-empty string, not an integer 7"),
    ("scratch-inverted", dict(doc=_set("scratch", [0x1010, 0x1000])),
     r"program\.json: scratch: \[0x1010, 0x1000\) is inverted"),
    ("scratch-beyond", dict(doc=_set("scratch", [0x1000, 1 << 40])),
     r"program\.json: scratch\[1\]: 1099511627776 is above 12288"),
    ("stats-string", dict(doc=_set("stats.commands", "29")),
     r"program\.json: stats\.commands: must be an integer, not a string '29'"),
    ("layer-macs-negative", dict(doc=_set("layers.0.macs", -1)),
     r"program\.json: layers\[0\]\.macs: -1 is negative"),
    ("layer-name-missing", dict(doc=_drop("layers.1.name")),
     r"program\.json: layers\[1\]\.name: missing"),
    ("name-list", dict(doc=_set("name", ["tiny"])),
     r"program\.json: name: must be a non-empty string, not a list"),
    # the float boundary: NaN and bad scales, ranges, flavours, shapes
    ("input-scale-nan", dict(doc=_set("boundary.input_scale", NAN)),
     r"program\.json: boundary\.input_scale: is NaN \(a scale must be finite and > 0\)"),
    ("input-scale-inf", dict(doc=_set("boundary.input_scale", INF)),
     r"program\.json: boundary\.input_scale: is inf \(a scale must be finite and > 0\)"),
    ("input-scale-zero", dict(doc=_set("boundary.input_scale", 0.0)),
     r"program\.json: boundary\.input_scale: 0\.0 is not > 0"),
    ("input-scale-string", dict(doc=_set("boundary.input_scale", "0.02")),
     r"program\.json: boundary\.input_scale: must be a number, not a string '0\.02'"),
    ("output-scale-nan", dict(doc=_set("boundary.output_scale", NAN)),
     r"program\.json: boundary\.output_scale: is NaN"),
    ("outputs-scale-nan", dict(doc=_set("boundary.outputs.0.scale", NAN)),
     r"program\.json: boundary\.outputs\[0\]\.scale: is NaN"),
    ("outputs-scale-negative", dict(doc=_set("boundary.outputs.0.scale", -0.25)),
     r"program\.json: boundary\.outputs\[0\]\.scale: -0\.25 is not > 0"),
    ("boundary-output-shape", dict(doc=_set("boundary.outputs.0.shape", [3, 4, 4])),
     r"program\.json: boundary\.outputs\[0\]\.shape: \[3, 4, 4\] \(48 values\) does not fit "
     r"output tensor 'c1' \[4, 4, 4\] \(64 codes\)"),
    ("boundary-qmin-range", dict(doc=_set("boundary.input_qmin", -1000)),
     r"program\.json: boundary\.input_qmin: -1000 is below -128"),
    ("boundary-qmax-below-qmin",
     dict(doc=lambda d: d["boundary"].update(input_qmin=10, input_qmax=5)),
     r"program\.json: boundary\.input_qmax: 5 is below 10"),
    ("boundary-flavour", dict(doc=_set("boundary.input_flavour", "evil")),
     r"program\.json: boundary\.input_flavour: 'evil' is not one of"),
    ("boundary-dtype", dict(doc=_set("boundary.input_dtype", "float32")),
     r"program\.json: boundary\.input_dtype: 'float32' is not one of uint8, int8"),
    ("boundary-unknown-field", dict(doc=_set("boundary.evil", 1)),
     r"program\.json: boundary\.evil: unknown field"),
    ("boundary-field-missing", dict(doc=_drop("boundary.input_zero_point")),
     r"program\.json: boundary\.input_zero_point: missing"),
    ("boundary-patches", dict(doc=_set("boundary.input_patches", [3, 1, 1, 1, 1, -1])),
     r"program\.json: boundary\.input_patches\[5\]: -1 is negative"),
    ("boundary-patches-shape", dict(doc=_set("boundary.input_patches", [3, 1, 1, 1, 1, 1])),
     r"program\.json: boundary\.input_shape: \[4, 8, 8\] gives the network \[36, 8, 8\], but "
     r"input tensor 'xq' is \[4, 8, 8\]"),
    # the configuration and the header
    ("cfg-list", dict(doc=_set("cfg", [])), r"program\.json: cfg: must be an object, not a list"),
    ("cfg-unknown-field", dict(doc=_set("cfg.evil", 1)),
     r"program\.json: cfg: HwConfig: unknown field\(s\) evil"),
    ("cfg-rows-string", dict(doc=_set("cfg.rows", "4")),
     r"program\.json: cfg: HwConfig\.rows = '4': must be an int"),
    ("cfg-depth-huge", dict(doc=_set("cfg.act_buffer_depth", 1 << 30), header=lambda h: h.update(
        config_id=_config_id(act_buffer_depth=1 << 30))),
     r"program\.json: cfg\.act_buffer_depth: 1073741824 words: beyond the 65536"),
    ("header-config-name", dict(header=lambda h: h.update(config_name=3)),
     r"zynqnn-program\.json: config_name: must be a non-empty string, not an integer 3"),
    ("header-version-bool", dict(header=lambda h: h.update(version=True)),
     r"program format version True; this zynqnn reads versions 1, 2, 3"),
    ("header-version-float", dict(header=lambda h: h.update(version=3.0)),
     r"program format version 3\.0; this zynqnn reads versions 1, 2, 3"),
    ("program-json-invalid", dict(members=_member("program.json", lambda d: d[:-2])),
     r"program\.json is not valid JSON \(Expecting"),
    ("program-json-deep", dict(members=_member("program.json",
                                               lambda d: b"[" * 100000 + b"]" * 100000)),
     r"program\.json is not valid JSON \(nested too deeply\)"),
    ("program-json-list", dict(members=_member("program.json", lambda d: b"[1, 2]")),
     r"program\.json: must be an object, not a list"),
    ("program-json-missing", dict(members=_member("program.json", None)),
     r"not a zynqnn program \(no program\.json\)"),
]


def _config_id(**changes):
    from zynqnn.hw.config import get_config

    return get_config("tiny").replace(**changes).config_id


IDS = [f"{i + 1:02d}/{len(CASES)}-{name}" for i, (name, _, _) in enumerate(CASES)]


def test_unedited_rewrite_loads_and_runs(base, tmp_path):
    """The control: the same rewrite without an edit gives a file that loads and runs."""
    path, _, _, g, x_path = base
    ok = craft(path, tmp_path / "same.zqp")
    x = np.load(x_path)
    assert np.array_equal(load(ok).run(x), g.run(x))


@pytest.mark.parametrize("edit, why", [c[1:] for c in CASES], ids=IDS)
def test_crafted_file_fails_with_one_line(base, tmp_path, capsys, monkeypatch, edit, why):
    path, _, _, _, x_path = base
    bad = craft(path, tmp_path / "crafted.zqp", **edit)
    with pytest.raises(ProgramFileError) as info:
        load(bad)
    msg = str(info.value)
    assert msg.startswith(f"{bad}: ") and "\n" not in msg, msg
    assert re.match(why, msg[len(f"{bad}: "):]), msg
    # nothing of it runs: the CLI refuses it before any command executes
    ran = []
    monkeypatch.setattr(Machine, "run", lambda self, *a: ran.append(a))
    out = tmp_path / "y.npy"
    code = cli.main(["run", str(bad), "-i", str(x_path), "-o", str(out)])
    _, err = capsys.readouterr()
    assert code == 1 and not ran and not out.exists()
    assert err == f"zynqnn run: error: {msg}\n", err


def test_the_count_of_crafted_files():
    """The cases are distinct and many (the ids show the count)."""
    names = [c[0] for c in CASES]
    assert len(set(names)) == len(names)
    assert len(CASES) >= 60, len(CASES)
