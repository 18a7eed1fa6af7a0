"""Keep the part of prepared data that needs long context most (stage ``select``, docs/DATA.md).

Scores every training row with --scorer at full length and in short windows of --window tokens,
ranks documents (or rows) by the mean score of their targets (--method longfilter: KL of the long-
to the short-context prediction, LongFilter's; mean_abs_d: |L_long - L_short|, the paper's), and
writes the top --keep share as a new prepared folder that every stage reads. Interrupted, the same
command continues; rerun on a complete folder it does nothing; another --keep or --unit reuses the
row scores (with --force).

examples:
  tokenweight select --data data/ext --scorer runs/uniform/model --out data/ext-top50 --keep 0.5
  tokenweight select --data data/ext --scorer runs/uniform/model --out data/ext-d --method mean_abs_d
"""

from __future__ import annotations

from tokenweight.stages.select import SelectConfig as CONFIG


def run(config: CONFIG) -> int:
    from tokenweight.stages.select import select

    print(select(config).line())
    return 0
