"""``tokenweight show`` end to end on a tiny random Llama with a tiny trained tokenizer; bad input exits 2."""

import re
from html.parser import HTMLParser

import pytest
import torch

from tests.tiny_models import save_tiny_llama, tiny_bpe
from tokenweight.cli.main import main

TEXT = "def f(x):\n    return x + 1  # <b>é</b>\n" * 6


def _tokenizer():
    return tiny_bpe([TEXT, "class A:\n    pass\n"] * 3, 280)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a loaded 2-core machine: one thread is far faster
    d = tmp_path_factory.mktemp("show")
    tok = _tokenizer()
    save_tiny_llama(d / "model", len(tok), 0, tok, num_attention_heads=2)
    save_tiny_llama(d / "scorer", len(tok), 1, num_attention_heads=2, max_position_embeddings=16)
    (d / "text.py").write_text(TEXT, encoding="utf-8")
    yield d
    torch.set_num_threads(before)


class _Spans(HTMLParser):
    def __init__(self):
        super().__init__()
        self.panels, self.refs, self.scripts = {}, [], 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.scripts += tag == "script"
        self.refs += [v for k, v in attrs if k in ("src", "href")]
        if tag == "section":
            self.cur = self.panels.setdefault(a["data-scheme"], [])
        if tag == "span" and a.get("class") == "tw-tok":
            self.cur.append(a)


def test_show_writes_self_contained_html(setup, capsys):
    out = setup / "out" / "heat.html"
    rc = main(
        [
            "show",
            "--model",
            str(setup / "model"),
            "--scorer",
            str(setup / "scorer"),
            "--text",
            str(setup / "text.py"),
            "--scheme",
            "dense:0.75",
            "--scheme",
            "sparse:0.3",
            "--max-tokens",
            "48",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    assert "48 tokens" in capsys.readouterr().out
    page = out.read_text(encoding="utf-8")
    p = _Spans()
    p.feed(page)
    assert list(p.panels) == ["d", "dense:0.75", "sparse:0.3"]
    assert all(len(spans) == 48 for spans in p.panels.values())
    assert p.scripts == 0 and p.refs == [] and not re.search(r"https?://", page)
    assert "&lt;" in page and "<b>" not in page
    # the window defaults to the scorer's max_position_embeddings (16), stride to (1 - 16/48)·16
    assert "window w = 16, stride s = 11" in page
    assert not [f for f in out.parent.iterdir() if f.name.startswith(".")]  # written atomically


def test_show_config_and_self_scoring(setup):
    out = setup / "self.html"
    cfg = setup / "cfg.yaml"
    cfg.write_text(f"model: {setup / 'model'}\nscheme: [longce:5, uniform]\nmax_tokens: 24\nwindow: 8\n")
    assert main(["show", "--config", str(cfg), "--text", str(setup / "text.py"), "--out", str(out)]) == 0
    p = _Spans()
    p.feed(out.read_text())
    assert list(p.panels) == ["d", "longce:5", "uniform"]
    assert "self-scoring" in out.read_text()
    # a flag replaces the config's list instead of extending it
    assert (
        main(
            ["show", "--config", str(cfg), "--text", str(setup / "text.py"), "--scheme", "dense:0.5", "--out", str(out)]
        )
        == 0
    )
    p = _Spans()
    p.feed(out.read_text())
    assert list(p.panels) == ["d", "dense:0.5"]
    cfg.write_text(f"model: {setup / 'model'}\nscheme: sparse:0.5\nmax_tokens: 24\n")  # one spec, not a list
    assert main(["show", "--config", str(cfg), "--text", str(setup / "text.py"), "--out", str(out)]) == 0
    p = _Spans()
    p.feed(out.read_text())
    assert list(p.panels) == ["d", "sparse:0.5"] and "window w = 16" in out.read_text()  # 64 // 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["--text", "{d}/missing.txt"], "text file"),
        (["--text", "{d}/text.py", "--scheme", "dense:2"], "bad --scheme"),
        (["--text", "{d}/text.py", "--scheme", "bogus"], "bad --scheme"),
        (["--text", "{d}/missing_model", "--model", "{d}/nope"], "text file"),
        (["--text", "{d}/text.py", "--model", "{d}/nope"], "does not exist"),
        (["--text", "{d}/text.py", "--model", "{d}/text.py"], "is a file"),
        (["--text", "{d}/text.py", "--stride", "20", "--window", "8"], "stride"),
        (["--text", "{d}/text.py", "--max-tokens", "1"], "max-tokens"),
        (["--text", "{d}/empty.txt"], "empty"),
        (["--text", "{d}/latin1.txt"], "not UTF-8"),
    ],
)
def test_bad_input_exits_2(setup, capsys, args, message):
    (setup / "empty.txt").write_text("  \n")
    (setup / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    argv = ["show", "--model", str(setup / "model")] + [a.format(d=setup) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err  # (transformers may print its weight-loading bar before)
    last = err.rstrip("\n").split("\n")[-1]
    assert last.startswith("tokenweight: error: ") and message in last
    assert "Traceback" not in err
