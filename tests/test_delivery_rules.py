"""The SDM's rules for a fault met while delivering an event (vol. 3, 6.13 and
table 6-5), as delivery.py applies them to every back end: which make a
double fault, and which are delivered in turn."""
import pytest

from virtlab import x86
from virtlab.delivery import Event, _double


@pytest.mark.parametrize("first, second, double", [
    (x86.GP, x86.PF, False),        # a page fault after a contributory one: in turn
    (x86.GP, x86.NP, True), (x86.DE, x86.TS, True),      # contributory after contributory
    (x86.PF, x86.GP, True), (x86.PF, x86.PF, True),      # anything but benign after a #PF
    (x86.UD, x86.GP, False), (x86.DB, x86.PF, False),    # after a benign one: in turn
    (0x20, x86.GP, False),                               # after an external interrupt
])
def test_which_fault_during_a_delivery_is_a_double_fault(first, second, double):
    assert _double(Event(first, 0), second) is double


@pytest.mark.parametrize("second", [x86.GP, x86.PF, x86.NP])
def test_a_fault_delivering_an_int_n_is_delivered_in_turn(second):
    assert _double(Event(0x80, software=True), second) is False
