"""CNF building blocks: one-hot choices as binary numbers, adder trees, reified comparators,
and order-encoded integers. Variables come from one pysat IDPool. A formula can be built against
a deadline and a clause budget: past either, building stops with ``EncodingAbandoned``."""

from __future__ import annotations

import time
from collections.abc import Sequence

from pysat.card import CardEnc, EncType
from pysat.formula import IDPool


class EncodingAbandoned(Exception):
    """Building a formula ran past its deadline or its clause budget (the message says which)."""


CHECK_EVERY = 4096  # clauses between two looks at the clock


class Cnf:
    """Clauses plus a variable pool; literals are pysat ints."""

    def __init__(self, deadline: float | None = None, max_clauses: int | None = None) -> None:
        self.pool = IDPool()
        self.clauses: list[list[int]] = []
        self._true: int | None = None
        self.deadline = deadline
        self.max_clauses = max_clauses
        self._next_check = CHECK_EVERY

    def check(self) -> None:
        """Raise EncodingAbandoned past the deadline or the clause budget."""
        n = len(self.clauses)
        if self.max_clauses is not None and n > self.max_clauses:
            raise EncodingAbandoned(f"encoding over {self.max_clauses} clauses")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise EncodingAbandoned("timeout while encoding")
        self._next_check = n + CHECK_EVERY

    def var(self, key: object = None) -> int:
        return self.pool.id(key) if key is not None else self.pool.id()

    @property
    def true(self) -> int:
        if self._true is None:
            self._true = self.var(("const", True))
            self.clauses.append([self._true])
        return self._true

    def add(self, clause: Sequence[int]) -> None:
        self.clauses.append(list(clause))
        if len(self.clauses) >= self._next_check:
            self.check()

    def exactly_one(self, lits: Sequence[int]) -> None:
        if len(lits) == 1:
            self.add([lits[0]])
            return
        enc = CardEnc.equals(lits=list(lits), bound=1, vpool=self.pool, encoding=EncType.seqcounter)
        self.clauses.extend(enc.clauses)
        self.check()

    def at_most(self, lits: Sequence[int], weights: Sequence[int], bound: int) -> None:
        """sum(weights[i] * lits[i]) <= bound, for small integer weights (unary expansion)."""
        expanded = [lit for lit, w in zip(lits, weights, strict=True) for _ in range(w)]
        if len(expanded) <= bound:
            return
        if bound < 0:
            self.add([])
            return
        if self.max_clauses is not None and 2 * len(expanded) * bound > self.max_clauses:
            raise EncodingAbandoned(f"encoding over {self.max_clauses} clauses")
        enc = CardEnc.atmost(
            lits=expanded, bound=bound, vpool=self.pool, encoding=EncType.seqcounter
        )
        self.clauses.extend(enc.clauses)
        self.check()

    def or_of(self, lits: Sequence[int]) -> int:
        """A literal equivalent to the disjunction of ``lits``."""
        lits = list(dict.fromkeys(lits))
        if not lits:
            return -self.true
        if len(lits) == 1:
            return lits[0]
        v = self.var()
        self.add([-v, *lits])
        for lit in lits:
            self.add([-lit, v])
        return v

    def and_of(self, lits: Sequence[int]) -> int:
        lits = list(dict.fromkeys(lits))
        if not lits:
            return self.true
        if len(lits) == 1:
            return lits[0]
        v = self.var()
        self.add([v, *(-lit for lit in lits)])
        for lit in lits:
            self.add([-v, lit])
        return v

    def choice_sum_at_most(
        self,
        choices: Sequence[Sequence[int]],
        weights: Sequence[Sequence[int]],
        bound: int,
    ) -> None:
        """sum over groups of the chosen item's weight <= bound, where each group of ``choices``
        has exactly one true literal. Partial sums are
        order-encoded, so unit propagation keeps them bounds-consistent (the strength of a
        decision diagram, size ~ groups x bound x distinct weights)."""
        prev: list[int] | None = None  # prev[t-1] <-> partial sum >= t
        for lits, ws in zip(choices, weights, strict=True):
            for lit, w in zip(lits, ws, strict=True):
                if w > bound:
                    self.add([-lit])
            levels = sorted({w for w in ws if 0 < w <= bound})
            at_least = {
                v: self.or_of([lit for lit, w in zip(lits, ws, strict=True) if w >= v])
                for v in levels
            }
            cur = [self.var() for _ in range(bound)]
            for t in range(1, bound):
                self.add([-cur[t], cur[t - 1]])
            if prev is not None:
                for u in range(1, bound + 1):
                    self.add([-prev[u - 1], cur[u - 1]])
            for v, lit in at_least.items():
                self.add([-lit, cur[v - 1]])
                if prev is not None:
                    for u in range(1, bound + 1):
                        if u + v > bound:
                            self.add([-prev[u - 1], -lit])
                        else:
                            self.add([-prev[u - 1], -lit, cur[u + v - 1]])
            prev = cur

    # -- binary numbers -------------------------------------------------------------------------
    def one_hot_number(self, choice: Sequence[int], values: Sequence[int]) -> list[int]:
        """Bits (LSB first) of the value selected by a one-hot ``choice``."""
        width = max((int(v).bit_length() for v in values), default=0)
        bits = []
        for b in range(width):
            on = [lit for lit, v in zip(choice, values, strict=True) if (int(v) >> b) & 1]
            if not on:
                bits.append(-self.true)
            elif len(on) == len(choice):
                bits.append(self.true)
            else:
                bits.append(self.or_of(on))
        return bits

    def _full_adder(self, a: int, b: int, c: int) -> tuple[int, int]:
        s, carry = self.var(), self.var()
        # s = a xor b xor c
        for x, y, z in ((a, b, c),):
            self.add([-x, -y, -z, s])
            self.add([-x, y, z, s])
            self.add([x, -y, z, s])
            self.add([x, y, -z, s])
            self.add([x, y, z, -s])
            self.add([x, -y, -z, -s])
            self.add([-x, y, -z, -s])
            self.add([-x, -y, z, -s])
        # carry = majority(a, b, c)
        self.add([-a, -b, carry])
        self.add([-a, -c, carry])
        self.add([-b, -c, carry])
        self.add([a, b, -carry])
        self.add([a, c, -carry])
        self.add([b, c, -carry])
        return s, carry

    def add_numbers(self, x: list[int], y: list[int]) -> list[int]:
        width = max(len(x), len(y))
        f = -self.true
        x = x + [f] * (width - len(x))
        y = y + [f] * (width - len(y))
        out, carry = [], f
        for a, b in zip(x, y, strict=True):
            s, carry = self._full_adder(a, b, carry)
            out.append(s)
        out.append(carry)
        return out

    def sum_numbers(self, numbers: Sequence[list[int]]) -> list[int]:
        """Bits of the sum of several binary numbers (balanced adder tree)."""
        work = [list(n) for n in numbers if n]
        if not work:
            return []
        while len(work) > 1:
            nxt = []
            for k in range(0, len(work) - 1, 2):
                nxt.append(self.add_numbers(work[k], work[k + 1]))
            if len(work) % 2:
                nxt.append(work[-1])
            work = nxt
        return work[0]

    def leq_const(self, bits: Sequence[int], bound: int) -> int:
        """A fresh literal r with r -> (number given by ``bits``) <= ``bound``."""
        r = self.var()
        if bound < 0:
            self.add([-r])
            return r
        width = len(bits)
        if bound >> width:
            return r  # the number has fewer bits than the bound: always below it
        for i in range(width - 1, -1, -1):
            if (bound >> i) & 1:
                continue
            # number > bound if bit i is 1, bound's bit is 0, and the higher bits are >= bound's
            higher = [-bits[j] for j in range(i + 1, width) if (bound >> j) & 1]
            self.add([-r, -bits[i], *higher])
        return r


class OrderInt:
    """An integer in [0, top] in order encoding: ge(v) is the literal of X >= v."""

    def __init__(self, cnf: Cnf, top: int, key: object) -> None:
        self.cnf = cnf
        self.top = top
        self.lits = [cnf.var((key, v)) for v in range(1, top + 1)]
        for v in range(1, top):
            cnf.add([-self.lits[v], self.lits[v - 1]])  # X >= v+1 -> X >= v

    def ge(self, v: int) -> int:
        if v <= 0:
            return self.cnf.true
        if v > self.top:
            return -self.cnf.true
        return self.lits[v - 1]

    def value(self, model: set[int]) -> int:
        return sum(1 for lit in self.lits if lit in model)
