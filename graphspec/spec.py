"""Front door: a spec file (or text) -> a checked, typed step graph."""
from __future__ import annotations

from typing import Optional

from .graph import Graph, check_cycles, infer
from .lang import Builder
from .loader import Located, load_file, load_text
from .passes.analysis import loops
from .schema import check_spec


# What a spec's train section means when it says nothing (graphspec render shows them filled in).
TRAIN_DEFAULTS = {"optimizer": "adam", "lr": 0.003, "schedule": "constant", "decay": 0.5, "decay_every": 1000,
                  "momentum": 0.9, "weight_decay": 0.0, "clip": 5.0, "batch": 32, "steps": 1000, "seed": 0,
                  "eval_every": 100, "len": {}, "target": {}}


# The size a dim declared `data` is shown at when no data binds it (compile, viz): one number,
# so the two agree (README: "dims from data, shown at a placeholder").
PLACEHOLDER = 64


def placeholders(g, bind: Optional[dict] = None) -> dict:
    """bind, with every dim still waiting for data at PLACEHOLDER."""
    out = {k: PLACEHOLDER for k, v in g.dims.items() if isinstance(v, str)}
    out.update(bind or {})
    return out


def train_config(g) -> dict:
    cfg = dict(TRAIN_DEFAULTS)
    cfg.update(g.train or {})
    return cfg


def read(path: str, text: Optional[str] = None) -> Located:
    return load_text(text, path) if text is not None else load_file(path)


def load(path: str, text: Optional[str] = None, mode: str = "train",
         bind: Optional[dict] = None) -> Graph:
    """Structural checks (JSON Schema), then semantic ones (names, shapes, cycles).
    Raises SpecError carrying every problem found, each at file:line:col.
    mode: 'train' (teacher forcing) or 'free' (decoders read their own predictions).
    bind: sizes the data fixes, e.g. {'V': 57}."""
    doc = read(path, text)
    check_spec(doc)
    g = Builder(doc, mode=mode, bind=bind).build()
    check_cycles(g)         # first: an undelayed cycle also leaves its sizes uninferable
    infer(g)
    loops(g)                # a recurrence reading both t-k and t+k: validate says so, not compile
    g.source = doc
    return g
