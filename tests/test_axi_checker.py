"""The AXI4 and AXI4-Lite protocol checkers (``zynqnn.sim.axi_checker``) on hand-written traces,
without a simulator: a clean trace passes, and each rule fires on a trace that breaks it (a
check that cannot fail is a defect)."""

from __future__ import annotations

import pytest

from zynqnn.sim.axi_checker import AxiLiteRules, AxiRules

BB = 8   # a 64-bit bus


class Trace:
    """Feeds ``rules`` one cycle at a time; a cycle's signals default to 0 (every valid and
    ready low) unless given."""

    def __init__(self, rules):
        self.rules = rules

    def reset(self, n=2, **sig):
        for _ in range(n):
            self.rules.step(lambda name: sig.get(name, 0), True)
        return self

    def cycle(self, **sig):
        self.rules.step(lambda name: sig.get(name, 0), False)
        return self

    def idle(self, n=1):
        for _ in range(n):
            self.cycle()
        return self

    @property
    def errors(self):
        return self.rules.errors


def axi(window=None):
    return Trace(AxiRules(BB * 8, window)).reset()


def lite():
    return Trace(AxiLiteRules()).reset()


def aw(addr=0x1000, beats=2, id=0, ready=1, **kw):
    return {**dict(awvalid=1, awready=ready, awaddr=addr, awlen=beats - 1, awsize=3,
                   awburst=1, awid=id), **kw}


def ar(addr=0x2000, beats=2, id=0, ready=1, **kw):
    return {**dict(arvalid=1, arready=ready, araddr=addr, arlen=beats - 1, arsize=3,
                   arburst=1, arid=id), **kw}


def w(last=0, ready=1, **kw):
    return {**dict(wvalid=1, wready=ready, wdata=0x1122334455667788, wstrb=0xFF,
                   wlast=last), **kw}


def r(last=0, id=0, ready=1, **kw):
    return {**dict(rvalid=1, rready=ready, rdata=0xAB, rlast=last, rid=id), **kw}


def b(id=0, ready=1, **kw):
    return {**dict(bvalid=1, bready=ready, bid=id), **kw}


def one_error(t, *words):
    assert len(t.errors) == 1, t.errors
    for word in words:
        assert word in t.errors[0], t.errors
    return t.errors[0]


# -- AXI4 -------------------------------------------------------------------------------------


def test_axi_clean_trace():
    t = axi(window=(0, 1 << 20)).idle()
    # A write with its address first, one with its data first, a waiting handshake each.
    t.cycle(**aw(ready=0)).cycle(**aw()).cycle(**w(ready=0)).cycle(**w()).cycle(**w(last=1))
    t.idle().cycle(**b(ready=0)).cycle(**b())
    t.cycle(**w()).cycle(**w(last=1)).cycle(**aw(0x1010)).idle().cycle(**b())
    # Two reads in flight, their data back to back.
    t.cycle(**ar()).cycle(**ar(0x2010, beats=1))
    t.cycle(**r(ready=0)).cycle(**r()).cycle(**r(last=1)).cycle(**r(last=1))
    # Payload X while valid is low is allowed; so is X data on a lane the strobe leaves out.
    t.cycle(awaddr="X" * 32, wdata="X" * 64, rdata="Z" * 64)
    t.cycle(**aw(0x3000, beats=1)).cycle(**w(last=1, wdata="X" * 8 + "0" * 56, wstrb=0x7F))
    t.idle().cycle(**b())
    assert t.rules.quiet
    assert t.rules.read_bursts == [(0x2000, 2), (0x2010, 1)]
    assert [a for a, _ in t.rules.write_bursts] == [0x1000, 0x1010, 0x3000]
    # A valid high in the cycle the reset begins (the reset is synchronous).
    t.cycle(arvalid=1).reset(1).idle()
    assert t.errors == []


@pytest.mark.parametrize("ch", ["aw", "w", "ar", "r", "b"])
def test_axi_valid_during_reset(ch):
    t = Trace(AxiRules(64)).reset(1, **{ch + "valid": 1}).reset(1, **{ch + "valid": 1})
    one_error(t, f"{ch}valid is 1 during reset")


@pytest.mark.parametrize("ch", ["aw", "w", "ar", "r", "b"])
def test_axi_valid_first_cycle_after_reset(ch):
    t = axi().cycle(**{ch + "valid": 1})
    assert f"{ch}valid is 1 in the first cycle after ARESETn rose" in t.errors[0], t.errors
    # The cycle after that one is free.
    t = axi().idle().cycle(**ar(beats=1))
    assert t.errors == []


def test_axi_valid_x_during_reset():
    t = axi().cycle(bvalid="X")   # the first cycle after reset, with X
    assert "bvalid is X in the first cycle after ARESETn rose" in t.errors[0], t.errors


@pytest.mark.parametrize("ch", ["aw", "w", "ar", "r", "b"])
def test_axi_handshake_x(ch):
    one_error(axi().idle().cycle(**{ch + "valid": "X"}), f"{ch}valid is X")
    one_error(axi().idle().cycle(**{ch + "valid": "Z"}), f"{ch}valid is Z")
    one_error(axi().idle().cycle(**{ch + "valid": 1, ch + "ready": "X"}),
              f"{ch}ready is X while {ch}valid")
    assert axi().idle().cycle(**{ch + "ready": "X"}).errors == []   # only while valid


@pytest.mark.parametrize("name", ["awid", "awaddr", "awlen", "awsize", "awburst", "awlock",
                                  "awcache", "awprot"])
def test_axi_aw_payload_x(name):
    t = axi().idle().cycle(**{**aw(), name: "0X"})
    assert f"{name} is 0X while awvalid" in t.errors[0], t.errors


@pytest.mark.parametrize("name", ["arid", "araddr", "arlen", "arsize", "arburst", "arlock",
                                  "arcache", "arprot"])
def test_axi_ar_payload_x(name):
    t = axi().idle().cycle(**{**ar(), name: "X0"})
    assert f"{name} is X0 while arvalid" in t.errors[0], t.errors


@pytest.mark.parametrize("name", ["wstrb", "wlast"])
def test_axi_w_payload_x(name):
    t = axi().idle().cycle(**aw(beats=1)).cycle(**{**w(last=1), name: "X"})
    assert f"{name} is X while wvalid" in t.errors[0], t.errors


def test_axi_wdata_x_on_a_strobed_lane():
    t = axi().idle().cycle(**aw(beats=1)).cycle(**w(last=1, wdata="0" * 56 + "0000000Z"))
    one_error(t, "wdata is X/Z on strobed byte lanes [0]")


@pytest.mark.parametrize("name", ["rid", "rdata", "rresp", "rlast"])
def test_axi_r_payload_x(name):
    t = axi().idle().cycle(**ar(beats=1)).cycle(**{**r(last=1), name: "X"})
    assert f"{name} is X while rvalid" in t.errors[0], t.errors


@pytest.mark.parametrize("name", ["bid", "bresp"])
def test_axi_b_payload_x(name):
    t = axi().idle().cycle(**aw(beats=1)).cycle(**w(last=1)).cycle(**{**b(), name: "Z"})
    one_error(t, f"{name} is Z while bvalid")


@pytest.mark.parametrize("ch, make", [("aw", aw), ("w", w), ("ar", ar), ("r", r), ("b", b)])
def test_axi_valid_dropped(ch, make):
    t = axi().idle().cycle(**make(ready=0)).idle()
    assert f"{ch}valid dropped before {ch}ready" in t.errors[0], t.errors


@pytest.mark.parametrize("ch, make, name", [("aw", aw, "awaddr"), ("w", w, "wdata"),
                                            ("ar", ar, "arlen"), ("r", r, "rdata"),
                                            ("b", b, "bresp")])
def test_axi_payload_changed(ch, make, name):
    t = axi().idle().cycle(**make(ready=0)).cycle(**{**make(ready=0), name: 8})
    assert f"{ch} payload ({name}) changed while waiting for {ch}ready" in t.errors[0], t.errors


def test_axi_write_response_without_burst():
    one_error(axi().idle().cycle(**b()), "write response without a write burst")


def test_axi_write_response_before_data():
    t = axi().idle().cycle(**aw(beats=2)).cycle(**w()).cycle(**b())
    one_error(t, "before its burst's address and last data were both accepted")
    # Data complete, address not yet.
    t = axi().idle().cycle(**w(last=1)).cycle(**b())
    one_error(t, "before its burst's address and last data")


def test_axi_write_response_in_the_cycle_of_wlast():
    t = axi().idle().cycle(**aw(beats=1)).cycle(**w(last=1), **b())
    one_error(t, "before its burst's address and last data")


def test_axi_more_write_responses_than_bursts():
    t = axi().idle().cycle(**aw(beats=1)).cycle(**w(last=1)).cycle(**b()).cycle(**b())
    one_error(t, "write response without a write burst")


def test_axi_bid_never_issued():
    t = axi().idle().cycle(**aw(beats=1, id=1)).cycle(**w(last=1)).cycle(**b(id=2))
    one_error(t, "write response with bid 2, no complete write has it (ids [1])")


def test_axi_read_data_without_burst():
    one_error(axi().idle().cycle(**r(last=1)), "read data without an outstanding read burst")
    # One burst, answered with one beat too many.
    t = axi().idle().cycle(**ar(beats=1)).cycle(**r(last=1)).cycle(**r(last=1))
    one_error(t, "read data without an outstanding read burst")


def test_axi_read_data_in_the_cycle_of_its_address():
    one_error(axi().idle().cycle(**ar(beats=1), **r(last=1)), "without an outstanding read")


def test_axi_rid_never_issued():
    t = axi().idle().cycle(**ar(beats=1, id=1)).cycle(**r(last=1, id=3))
    one_error(t, "read data with rid 3, no outstanding read has it (outstanding ids [1])")


def test_axi_rlast_early_and_late():
    one_error(axi().idle().cycle(**ar(beats=2)).cycle(**r(last=1)),
              "rlast=1 on beat 1 of a 2-beat burst")
    one_error(axi().idle().cycle(**ar(beats=2)).cycle(**r()).cycle(**r()),
              "rlast=0 on beat 2 of a 2-beat burst")


def test_axi_wlast_early_and_late():
    one_error(axi().idle().cycle(**aw(beats=3)).cycle(**w()).cycle(**w(last=1)),
              "write burst of 3 beats got wlast after 2 beats")
    one_error(axi().idle().cycle(**aw(beats=2)).cycle(**w()).cycle(**w()),
              "write burst of 2 beats without wlast on its last beat")
    # Data first: the missing wlast is seen when the address arrives.
    one_error(axi().idle().cycle(**w()).cycle(**w()).cycle(**aw(beats=2)),
              "write burst of 2 beats without wlast on its last beat")
    # Data first, wlast early: seen when they are matched.
    one_error(axi().idle().cycle(**w(last=1)).cycle(**aw(beats=2)),
              "write burst of 2 beats got wlast after 1 beats")


@pytest.mark.parametrize("burst, words", [
    (aw(0x0FF8, beats=2), "crosses a 4096-byte boundary"),
    (ar(0x2004, beats=1), "not beat-aligned"),
    (ar(beats=17), "burst of 17 beats"),
    (aw(awsize=2), "AxSIZE 2"),
    (ar(arburst=2), "AxBURST 2"),
    (aw(0x1_0000, beats=1), "outside the window"),
])
def test_axi_burst_rules(burst, words):
    one_error(axi(window=(0, 0x1_0000)).idle().cycle(**burst), words)


# -- AXI4-Lite --------------------------------------------------------------------------------


def law(ready=1, **kw):
    return {**dict(awvalid=1, awready=ready, awaddr=0x10, awprot=0), **kw}


def lw(ready=1, **kw):
    return {**dict(wvalid=1, wready=ready, wdata=0xDEADBEEF, wstrb=0xF), **kw}


def lar(ready=1, **kw):
    return {**dict(arvalid=1, arready=ready, araddr=0x14, arprot=0), **kw}


def lr(ready=1, **kw):
    return {**dict(rvalid=1, rready=ready, rdata=0x5A, rresp=0), **kw}


def lb(ready=1, **kw):
    return {**dict(bvalid=1, bready=ready, bresp=0), **kw}


def test_lite_clean_trace():
    t = lite().idle()
    t.cycle(**law(), **lw()).idle().cycle(**lb(ready=0)).cycle(**lb())      # together
    t.cycle(**lw(ready=0)).cycle(**lw()).cycle(**law()).cycle(**lb())       # data first
    t.cycle(**law()).idle(3).cycle(**lw()).cycle(**lb())                    # address first
    t.cycle(**lar(ready=0)).cycle(**lar()).idle(2).cycle(**lr(ready=0)).cycle(**lr())
    t.cycle(**lw(wdata="X" * 24 + "0" * 8, wstrb=0x1), **law()).cycle(**lb())   # X off-strobe
    assert t.errors == []
    assert t.rules.quiet and (t.rules.b, t.rules.r) == (4, 1)


@pytest.mark.parametrize("ch", ["aw", "w", "ar", "r", "b"])
def test_lite_reset_rules(ch):
    one_error(Trace(AxiLiteRules()).reset(2, **{ch + "valid": 1}), f"{ch}valid is 1 during reset")
    one_error(lite().cycle(**{ch + "valid": 1}),
              f"{ch}valid is 1 in the first cycle after ARESETn rose")


@pytest.mark.parametrize("ch", ["aw", "w", "ar", "r", "b"])
def test_lite_handshake_x(ch):
    one_error(lite().idle().cycle(**{ch + "valid": "X"}), f"{ch}valid is X")
    one_error(lite().idle().cycle(**{ch + "valid": 1, ch + "ready": "Z"}),
              f"{ch}ready is Z while {ch}valid")


@pytest.mark.parametrize("make, name", [(law, "awaddr"), (law, "awprot"), (lw, "wstrb"),
                                        (lar, "araddr"), (lar, "arprot"), (lr, "rdata"),
                                        (lr, "rresp"), (lb, "bresp")])
def test_lite_payload_x(make, name):
    t = lite().idle()
    if make is lr:
        t.cycle(**lar())
    if make is lb:
        t.cycle(**law(), **lw())
    t.cycle(**{**make(ready=0), name: "XX"})
    assert f"{name} is XX while" in t.errors[0], t.errors


def test_lite_wdata_x():
    one_error(lite().idle().cycle(**lw(wdata="X" * 8 + "0" * 24, wstrb=0x8), **law()),
              "wdata is X/Z on strobed byte lanes [3]")


@pytest.mark.parametrize("ch, make, name", [("aw", law, "awaddr"), ("w", lw, "wdata"),
                                            ("ar", lar, "araddr"), ("r", lr, "rdata"),
                                            ("b", lb, "bresp")])
def test_lite_stability(ch, make, name):
    assert f"{ch}valid dropped before {ch}ready" in \
        lite().idle().cycle(**make(ready=0)).idle().errors[0]
    t = lite().idle().cycle(**make(ready=0)).cycle(**{**make(ready=0), name: 3})
    assert f"{ch} payload ({name}) changed" in t.errors[0], t.errors


def test_lite_write_response_needs_address_and_data():
    one_error(lite().idle().cycle(**lb()), "write response 1 with 0 write addresses and 0")
    one_error(lite().idle().cycle(**law()).cycle(**lb()), "with 1 write addresses and 0 write")
    one_error(lite().idle().cycle(**lw()).cycle(**lb()), "with 0 write addresses and 1 write")
    # In the same cycle as the handshakes it answers.
    one_error(lite().idle().cycle(**law(), **lw(), **lb()), "write response 1")


def test_lite_one_response_per_request():
    one_error(lite().idle().cycle(**law(), **lw()).cycle(**lb()).cycle(**lb()),
              "write response 2 with 1 write addresses and 1 write data")
    one_error(lite().idle().cycle(**lar()).cycle(**lr()).cycle(**lr()),
              "read response 2 with 1 read addresses")
    one_error(lite().idle().cycle(**lr()), "read response 1 with 0 read addresses")
    one_error(lite().idle().cycle(**lar(), **lr()), "read response 1 with 0")
    assert not lite().idle().cycle(**law()).rules.quiet
