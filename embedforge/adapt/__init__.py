"""``adapt``: try several ways to fit a model to your corpus, measure each on held-out data, keep the winner.

See :func:`embedforge.adapt.run.adapt` for the flow, :mod:`embedforge.adapt.heldout` for the
label-free estimate and :mod:`embedforge.adapt.choose` for the guardrail.
"""

from __future__ import annotations

from embedforge.adapt.choose import Decision, ModelScores, decide
from embedforge.adapt.config import CANDIDATE_NAMES, AdaptConfig
from embedforge.adapt.inputs import LabelledTexts, QueryPairs, load_query_pairs
from embedforge.adapt.planner import parse_budget
from embedforge.adapt.run import AdaptResult, adapt
from embedforge.adapt.state import discard_work, work_dir

__all__ = [
    "CANDIDATE_NAMES",
    "AdaptConfig",
    "AdaptResult",
    "Decision",
    "ModelScores",
    "QueryPairs",
    "LabelledTexts",
    "adapt",
    "decide",
    "discard_work",
    "load_query_pairs",
    "parse_budget",
    "work_dir",
]
