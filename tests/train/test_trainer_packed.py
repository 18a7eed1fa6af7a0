"""Packed rows through training: examples and batches, a training step (NLL, short NLL of every
scorer, weights of every scheme with weight_norm document, loss, gradients) equal to the same
documents as separate rows, flash-attention's flattening, and train/pretrain on a packed folder."""

from __future__ import annotations

import json
import types

import pytest
import torch

from tests.train.test_trainer import targs
from tests.train.train_helpers import BOS, dataset, tiny_model
from tokenweight.scoring import token_nll
from tokenweight.short_nll import FrozenScorer, LongCEScorer, SelfScorer
from tokenweight.token_weighting import document_forward, nll_output_layer
from tokenweight.train.collate import PadCollator, TrainSequences, batch_doc_lengths, crop_doc_lengths
from tokenweight.train.trainer import WeightedTrainer

W, S = 8, 5
# Every document longer than w has more long-range tokens than sparse:0.3 keeps, so top-κ never
# meets ties (a document's first w - 1 targets have short == long exactly); 2 and 1 tokens: edges.
DOCS = [[30, 14, 2], [44], [20, 1, 16]]
N = max(sum(x) for x in DOCS)


def documents(seed=0):
    """Every document: BOS + random tokens, as lists, in row order."""
    g = torch.Generator().manual_seed(seed)
    return [[BOS] + torch.randint(4, 64, (length - 1,), generator=g).tolist() for row in DOCS for length in row]


def packed_rows(docs):
    out, i = [], 0
    for row in DOCS:
        out.append([t for d in docs[i : i + len(row)] for t in d])
        i += len(row)
    return out


def batches(seed=0):
    """The packed batch (rows of DOCS) and the batch of the same documents as separate rows, with
    where each document lies in both: (packed, separate, [(row, start, length, separate row)])."""
    docs = documents(seed)
    packed = PadCollator(0)([{"input_ids": r, "doc_lengths": DOCS[i]} for i, r in enumerate(packed_rows(docs))])
    separate = PadCollator(0)([{"input_ids": d} for d in docs])
    where, d = [], 0
    for r, row in enumerate(DOCS):
        start = 0
        for length in row:
            where.append((r, start, length, d))
            start, d = start + length, d + 1
    return packed, separate, where


def test_examples_and_batches():
    docs = documents()
    ds = dataset(packed_rows(docs)).add_column("doc_lengths", DOCS)
    seqs = TrainSequences(ds)
    assert seqs.packed and seqs.num_tokens == sum(map(sum, DOCS))
    assert set(seqs[2]) == {"input_ids", "doc_lengths"} and seqs[2]["doc_lengths"] == [20, 1, 16]
    assert seqs[2]["input_ids"].tolist() == packed_rows(docs)[2]
    cropped = TrainSequences(ds, max_length=31)
    assert [cropped[i]["doc_lengths"] for i in range(3)] == [[30, 1], [31], [20, 1, 10]]
    assert cropped[0]["input_ids"].tolist() == packed_rows(docs)[0][:31]
    assert crop_doc_lengths([3, 4], 3) == [3] and crop_doc_lengths([3, 4], None) == [3, 4]
    # pretrain's windows: cut from every document on its own, BOS put back per document; the same
    # windows as the documents as rows of their own
    win, alone = (
        TrainSequences(ds, window=W, bos_token_id=BOS),
        TrainSequences(dataset(docs), window=W, bos_token_id=BOS),
    )
    assert [win[i]["input_ids"].tolist() for i in range(len(win))] == [
        alone[i]["input_ids"].tolist() for i in range(len(alone))
    ]
    assert win.num_tokens == alone.num_tokens
    assert all("doc_lengths" not in win[i] for i in range(len(win)))
    # the collator: -100 at every document's first token, the lengths as a zero-padded tensor
    b = PadCollator(0)([seqs[i] for i in range(3)])
    assert b["doc_lengths"].tolist() == [[30, 14, 2], [44, 0, 0], [20, 1, 16]]
    assert batch_doc_lengths(b["doc_lengths"]) == DOCS and batch_doc_lengths(None) is None
    ignored = (b["labels"] == -100).nonzero().tolist()
    assert ignored == [[0, 30], [0, 44], [1, 44], [1, 45], [2, 20], [2, 21], *[[2, j] for j in range(37, N)]]
    assert int((b["labels"][:, 1:] != -100).sum()) == sum(length - 1 for row in DOCS for length in row)
    with pytest.raises(ValueError, match="doc_lengths"):
        PadCollator(0)([{"input_ids": [1, 5, 6], "doc_lengths": [2]}])


def with_column(model, batch):
    """``batch`` with a ``short_nll`` column: a reference model's full-context NLL (Rho-1),
    token-aligned, per document of packed rows (as ``tokenweight score`` computes it)."""
    docs = batch_doc_lengths(batch.get("doc_lengths"))
    ref = token_nll(model, batch["input_ids"], batch["attention_mask"], docs)
    return {**batch, "short_nll": torch.nn.functional.pad(ref, (1, 0))}


CASES = [
    ("uniform", None),
    ("dense:0.75", "self"),
    ("sparse:0.3", "self"),
    ("longce:5", "self"),
    ("longce:5", "longce"),
    ("dense:0.5", "longce"),
    ("rho1:0.6", "frozen"),
    ("dense:0.75", "frozen"),
    ("rho1:0.6", "column"),
    ("sparse:0.3", "column"),
]


@pytest.mark.parametrize("spec,kind", CASES)
def test_packed_step_equals_separate_documents(tmp_path, spec, kind):
    """The documents of a packed batch get the NLL, short NLL, weights (weight_norm document) and
    loss of the same documents as separate rows; gradients agree too."""
    model = tiny_model(n=N).train()
    packed, separate, where = batches()
    reference = tiny_model(n=N, seed=1)
    scorer = {
        None: None,
        "self": SelfScorer(W, S, bos_token_id=BOS),
        "longce": LongCEScorer(6, 4),
        "frozen": FrozenScorer(reference, window=N),  # w >= n: the reference's full-context NLL
        "column": None,
    }[kind]
    if kind == "column":
        packed, separate = with_column(reference, packed), with_column(reference, separate)
    trainers = {
        norm: WeightedTrainer(
            model=model,
            args=targs(tmp_path / norm),
            train_dataset=TrainSequences(dataset([[BOS, 5]])),
            data_collator=PadCollator(0),
            scheme=spec,
            short=scorer,
            weight_norm=norm,
        )
        for norm in ("sequence", "document")
    }
    nll_p, mask_p, w_p = trainers["document"].forward_weights(model, packed)
    nll_s, mask_s, w_s = trainers["sequence"].forward_weights(model, separate)
    assert int(mask_p.sum()) == int(mask_s.sum()) == sum(length - 1 for row in DOCS for length in row)
    for r, start, length, d in where:
        span = slice(start, start + length - 1)
        assert torch.equal(mask_p[r, span], mask_s[d, : length - 1])
        if start > 0:
            assert not mask_p[r, start - 1]  # the prediction across a boundary is not trained
        torch.testing.assert_close(nll_p[r, span], nll_s[d, : length - 1], atol=1e-5, rtol=0)
        if w_p is not None:
            torch.testing.assert_close(w_p[r, span], w_s[d, : length - 1], atol=1e-5, rtol=0)
    if w_p is not None:
        assert w_p[~mask_p].eq(0).all() and w_p[mask_p].std() > 1e-2  # the weights are not uniform
    losses, grads = [], []
    for trainer, batch in ((trainers["document"], packed), (trainers["sequence"], separate)):
        model.zero_grad()
        count = torch.tensor(int((batch["labels"][:, 1:] != -100).sum()))  # HF's num_items_in_batch
        loss = trainer.compute_loss(model, batch, num_items_in_batch=count)
        loss.backward()
        losses.append(loss.item())
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    assert abs(losses[0] - losses[1]) < 1e-6
    logs = [trainers[k]._stats["train"].to_logs() for k in ("document", "sequence")]  # what the log records
    assert logs[0]["scored_tokens"] == logs[1]["scored_tokens"] and logs[0]["tokens"] == logs[1]["tokens"] == 127
    for key in ("weighted_loss", "plain_loss", "weight_mean", "weight_std", "weight_zero_share"):
        assert logs[0][key] == pytest.approx(logs[1][key], abs=1e-5), key
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-4, atol=1e-6, msg=k)


def test_weight_norm_document_on_unpacked_batches_is_sequence(tmp_path):
    model = tiny_model(n=N)
    _, separate, _ = batches(seed=1)
    out = []
    for norm in ("sequence", "document"):
        trainer = WeightedTrainer(
            model=model,
            args=targs(tmp_path / norm),
            train_dataset=TrainSequences(dataset([[BOS, 5]])),
            data_collator=PadCollator(0),
            scheme="sparse:0.5",
            short=SelfScorer(W, S, bos_token_id=BOS),
            weight_norm=norm,
        )
        out.append(trainer.forward_weights(model, separate))
    assert all(torch.equal(a, b) for a, b in zip(out[0], out[1]))
    with pytest.raises(ValueError, match="weight_norm must be None or one of sequence, document"):
        WeightedTrainer(model=model, args=targs(tmp_path / "x"), train_dataset=[], weight_norm="row")


def test_flash_attention_flattens_the_batch_into_one_row():
    """On flash-attention the batch becomes one row without padding, positions restarting at every
    document (HF's flattening convention); run here on sdpa, which reads the documents from the
    positions (transformers' packed-sequence detection), the NLL equals the masked forward's."""
    model = tiny_model(n=N).eval()
    packed, _, _ = batches(seed=2)
    docs, ids, targets = batch_doc_lengths(packed["doc_lengths"]), packed["input_ids"], packed["labels"][:, 1:]
    flash = types.SimpleNamespace(config=types.SimpleNamespace(_attn_implementation="flash_attention_2"))
    kwargs, flat_targets, restore = document_forward(flash, ids, packed["attention_mask"], targets, docs)
    total = sum(map(sum, DOCS))
    assert kwargs["attention_mask"] is None and kwargs["input_ids"].shape == (1, total)
    starts = torch.tensor([0, *[length for row in DOCS for length in row]]).cumsum(0)[:-1]
    assert kwargs["position_ids"][0, starts].eq(0).all() and flat_targets.shape == (1, total - 1)
    assert flat_targets[0, starts[1:] - 1].eq(-100).all()  # no target across a boundary, nor across rows
    head = model.get_output_embeddings()
    with torch.no_grad():
        with nll_output_layer(head, flat_targets, 16, model=model):
            flat = restore(model(**kwargs, use_cache=False).logits)
        sdpa_kwargs, same_targets, same = document_forward(model, ids, packed["attention_mask"], targets, docs)
        assert same_targets is targets and sdpa_kwargs["attention_mask"].shape == (3, 1, N, N)
        with nll_output_layer(head, targets, 16, model=model):
            masked = same(model(**sdpa_kwargs, use_cache=False).logits)
    mask = targets != -100
    assert flat.shape == masked.shape == (3, N - 1)
    torch.testing.assert_close(flat[mask], masked[mask], atol=1e-5, rtol=0)


def test_train_and_pretrain_on_a_packed_prepared_folder(tmp_path):
    """``prepare --pack`` (the data stage), then ``score``, ``pretrain`` and ``train`` (frozen and
    self-scoring, weight_norm document) on it: the runs finish, every document's weights average 1,
    and the frozen cache is marked packed (its numbers: tests/scorecache/test_scorecache.py)."""
    from tests.data.conftest import make_docs
    from tokenweight.data import load_prepared
    from tokenweight.data.pipeline import prepare
    from tokenweight.data.tokenizer import train_tokenizer
    from tokenweight.scorecache import ScoreCache, compute_scores
    from tokenweight.stages.prepare import PrepareConfig
    from tokenweight.stages.pretrain import PretrainConfig, pretrain
    from tokenweight.stages.train import TrainConfig, train

    src, tok = tmp_path / "src", tmp_path / "tok"
    src.mkdir()
    for i, text in enumerate(make_docs(30, seed=5, lines=(1, 2))):
        (src / f"doc{i:02d}.txt").write_text(text)
    train_tokenizer(make_docs(30, seed=7), vocab_size=320).save_pretrained(str(tok))
    data = tmp_path / "data"
    prepare(data, PrepareConfig(inputs=[str(src)], tokenizer=str(tok), n=64, val_fraction=0.1, pack=True))
    split = load_prepared(data)[0]["train"]
    lengths = split["doc_lengths"]
    assert sum(len(x) > 1 for x in lengths) >= 3  # rows of several documents

    common = dict(data=str(data), batch_size=2, max_steps=2, warmup_steps=0, report_to=["none"], save_steps=100)
    pre = pretrain(PretrainConfig(out=str(tmp_path / "pre"), init="tiny", window=16, **common))
    model_dir = pre.out / "model"
    scores = tmp_path / "scores"
    compute_scores(scores, data, model_dir, window=16, stride=12, device="cpu")
    cache = ScoreCache.open(scores)
    assert cache.meta["packed"] is True
    for scorer, extra in (("frozen", {"scores": str(scores)}), ("self", {"window": 16})):
        out = tmp_path / f"train-{scorer}"
        cfg = TrainConfig(
            out=str(out),
            model=str(model_dir),
            scheme="dense:0.5",
            scorer=scorer,
            weight_norm="document",
            logging_steps=1,
            **common,
            **extra,
        )
        train(cfg)
        logs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if '"scored_tokens"' in x]
        assert len(logs) == 2 and all(x["weight_mean"] == pytest.approx(1.0, abs=1e-5) for x in logs)
        for x in logs:  # tokens of a batch minus one per document: no target at a document's start
            assert x["scored_tokens"] < x["tokens"] and x["plain_loss"] > 0
        assert json.loads((out / "settings.json").read_text())["weight_norm"] == "document"
