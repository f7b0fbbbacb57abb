"""Naming the collective a hang is in, from each rank's last collectives (torch's Flight
Recorder, as engine/flight_recorder.py reads it). The runs that produce these are in
test_faults.py; here the rule itself, on the three kinds of mismatch, without engines."""

from __future__ import annotations

import os
import threading

import torch.distributed  # noqa: F401 - as in an engine, where a group's torch is loaded before a hang

from parakit.cluster.collectives import mismatch
from parakit.engine import flight_recorder
from parakit.engine.flight_recorder import Collective


def c(seq: int, op: str = "all_reduce", size: int = 129, completed: bool = True, dtype: str = "Float") -> Collective:
    return Collective(group="0", seq=seq, op=op, sizes=((size,),), dtypes=(dtype,), completed=completed)


def test_a_rank_that_never_entered_the_collective_is_named_with_its_last_one():
    ranks = {0: [c(7), c(8), c(9, completed=False)], 1: [c(7), c(8)], 2: [c(8), c(9, completed=False)]}
    assert mismatch(ranks, 3) == ("all_reduce #9 of Float[129] did not complete: ranks [1] did not arrive at it "
                                  "(never entered it; rank 1's last: all_reduce #8 of Float[129])")


def test_ranks_in_another_op_or_on_other_sizes_entered_a_different_one():
    ops = {0: [c(4), c(5, size=4, completed=False)], 1: [c(4), c(5, "broadcast", size=4, completed=False)]}
    assert mismatch(ops, 2) == ("all_reduce #5 of Float[4] did not complete: ranks [1] entered a different one "
                                "(rank 1: broadcast #5 of Float[4])")
    # the collective most ranks wait in is the one named, whoever is rank 0
    sizes = {0: [c(5, size=8, completed=False)], 1: [c(5, size=4, completed=False)], 2: [c(5, size=4, completed=False)]}
    assert mismatch(sizes, 3).startswith("all_reduce #5 of Float[4] did not complete: ranks [0] entered a different "
                                         "one (rank 0: all_reduce #5 of Float[8])")
    dtypes = {0: [c(5, completed=False)], 1: [c(5, dtype="Double", completed=False)]}
    assert "ranks [1] entered a different one (rank 1: all_reduce #5 of Double[129])" in mismatch(dtypes, 2)


def test_silent_ranks_and_no_rank_in_a_collective():
    assert mismatch({0: [c(3, completed=False)]}, 2) == "all_reduce #3 of Float[129] did not complete: ranks [1] did not answer"
    assert mismatch({0: [c(3)], 1: [c(3)]}, 2) is None  # nobody waits in one: the stacks say where they are
    both = mismatch({0: [c(3, completed=False)], 1: [c(3, completed=False)]}, 2)
    assert both == "all_reduce #3 of Float[129] did not complete: every rank entered it (ranks [0, 1] wait in it)"


def test_torch_entries_read_and_an_engine_answers_through_its_fifo(tmp_path):
    entry = {"process_group": ["0", "default_pg"], "collective_seq_id": 12, "profiling_name": "gloo:broadcast",
             "input_sizes": [[2, 3]], "input_dtypes": ["BFloat16"], "retired": False}
    assert Collective.from_entry(entry).describe() == "broadcast #12 of BFloat16[2, 3]"
    assert Collective("1", 2, "barrier", (), (), True).describe() == "barrier #2 in group 1"
    # the answering thread, in this process: no group here, so an empty list, not None
    fifo = flight_recorder.listen(str(tmp_path))
    assert os.path.exists(fifo) and any(t.name == "parakit-collectives" for t in threading.enumerate())
    assert flight_recorder.request(str(tmp_path), os.getpid())
    for _ in range(500):
        got = flight_recorder.answer(str(tmp_path), os.getpid())
        if got is not None:
            break
        threading.Event().wait(0.01)
    assert got == [] or all(isinstance(x, Collective) for x in got)
    assert not flight_recorder.request(str(tmp_path), 1)  # nobody listens for pid 1: told at once
