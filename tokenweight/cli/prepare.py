"""Tokenize a corpus into n-token sequences (stage ``prepare``, docs/DATA.md).

Writes --out DIR with train/, validation/, tokenizer/ and manifest.json. Rerunning with the same
inputs and options finds the fingerprint unchanged and does nothing; --force redoes it.

examples:
  tokenweight prepare --out data/pre --n 256 --max-tokens 2600000 --episode-distance 16:200
  tokenweight prepare --out data/ext --n 1024 --tokenizer data/pre/tokenizer --after data/pre \\
      --max-tokens 1500000 --episode-distance 16:
  tokenweight prepare books/ --out data/books --n 32768 --tokenizer meta-llama/Meta-Llama-3-8B
  tokenweight prepare notes/ --out data/notes --n 1024 --pack   # short documents packed, doc_lengths column
"""

from __future__ import annotations

from tokenweight.stages.prepare import PrepareConfig as CONFIG


def run(config: CONFIG) -> int:
    from tokenweight.stages.prepare import prepare

    print(prepare(config).line())
    return 0
