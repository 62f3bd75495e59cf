"""Spec errors: every one names file:line:col, says what is wrong and what would be right."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Optional


@dataclass(frozen=True)
class Loc:
    file: str
    line: int       # 1-based
    col: int        # 1-based

    def shifted(self, cols: int) -> "Loc":
        return Loc(self.file, self.line, self.col + cols)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


UNKNOWN = Loc("<spec>", 1, 1)


class SpecError(Exception):
    """One or more problems in a spec. str() gives one line per problem, sorted by position."""

    def __init__(self, problems: list[tuple[Loc, str]]):
        self.problems = sorted(set(problems), key=lambda p: (p[0].file, p[0].line, p[0].col, p[1]))
        super().__init__("\n".join(f"{loc}: {msg}" for loc, msg in self.problems))

    @classmethod
    def at(cls, loc: Loc, msg: str) -> "SpecError":
        return cls([(loc, msg)])


class Problems:
    """Collects errors so a run reports all of them, not just the first."""

    def __init__(self):
        self.items: list[tuple[Loc, str]] = []

    def add(self, loc: Optional[Loc], msg: str):
        self.items.append((loc or UNKNOWN, msg))

    def extend(self, err: SpecError):
        self.items.extend(err.problems)

    def raise_if_any(self):
        if self.items:
            raise SpecError(self.items)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(set(choices)), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class UserError(Exception):
    """Bad input that is not a spec (a data file, a checkpoint, a flag): one line, exit 2."""
    code = 2


class Interrupted(UserError):
    """Ctrl-C: a checkpoint was written; exit 130 like any interrupted command."""
    code = 130
