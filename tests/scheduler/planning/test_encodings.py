"""CNF building blocks, checked exhaustively on small numbers."""

from __future__ import annotations

import itertools

import pytest
from pysat.solvers import Solver

from hxsched.scheduler.planning.encodings import Cnf, OrderInt


def solve(cnf: Cnf, assumptions=()):
    with Solver(name="glucose4", bootstrap_with=cnf.clauses) as s:
        return s.solve(assumptions=list(assumptions)), s.get_model()


@pytest.mark.parametrize("bound", [0, 3, 7, 12, 40])
def test_sum_of_one_hot_numbers_and_comparator(bound):
    values = [[0, 3, 5], [1, 4], [2, 6, 7]]
    for pick in itertools.product(*[range(len(v)) for v in values]):
        cnf = Cnf()
        choices = [[cnf.var() for _ in v] for v in values]
        for row in choices:
            cnf.exactly_one(row)
        total = cnf.sum_numbers(
            [cnf.one_hot_number(row, v) for row, v in zip(choices, values, strict=True)]
        )
        r = cnf.leq_const(total, bound)
        fixed = [row[k] for row, k in zip(choices, pick, strict=True)]
        ok, _ = solve(cnf, [*fixed, r])
        assert ok == (sum(v[k] for v, k in zip(values, pick, strict=True)) <= bound)


@pytest.mark.parametrize("bound", [0, 4, 9])
def test_choice_sum_at_most(bound):
    weights = [[0, 2, 5], [1, 3], [4, 0, 6]]
    for pick in itertools.product(*[range(len(w)) for w in weights]):
        cnf = Cnf()
        choices = [[cnf.var() for _ in w] for w in weights]
        for row in choices:
            cnf.exactly_one(row)
        cnf.choice_sum_at_most(choices, weights, bound)
        ok, _ = solve(cnf, [row[k] for row, k in zip(choices, pick, strict=True)])
        assert ok == (sum(w[k] for w, k in zip(weights, pick, strict=True)) <= bound)


def test_order_int_and_gates():
    cnf = Cnf()
    x = OrderInt(cnf, 5, "x")
    a, b = cnf.var(), cnf.var()
    both = cnf.and_of([a, b])
    either = cnf.or_of([a, b])
    ok, model = solve(cnf, [x.ge(3), -x.ge(4), a, -b])
    assert ok
    m = {lit for lit in model if lit > 0}
    assert x.value(m) == 3 and either in m and both not in m
    assert x.ge(0) == cnf.true and x.ge(6) == -cnf.true
    cnf.at_most([a, b], [2, 1], 2)
    assert not solve(cnf, [a, b])[0]


def test_building_past_the_deadline_or_the_clause_budget_is_abandoned():
    import time

    from hxsched.scheduler.planning.encodings import EncodingAbandoned

    cnf = Cnf(deadline=time.monotonic() - 1.0)
    with pytest.raises(EncodingAbandoned, match="timeout"):
        for _ in range(10_000):
            cnf.add([cnf.var()])
    cnf = Cnf(max_clauses=100)
    lits = [cnf.var() for _ in range(60)]
    with pytest.raises(EncodingAbandoned, match="over 100 clauses"):
        cnf.at_most(lits, [1] * 60, 30)
    cnf = Cnf(max_clauses=100)
    with pytest.raises(EncodingAbandoned, match="over 100 clauses"):
        cnf.exactly_one([cnf.var() for _ in range(200)])
