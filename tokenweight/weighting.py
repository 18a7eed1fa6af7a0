"""Weighting schemes: per-token scores -> per-token loss weights (docs/METHOD.md, step 2).

A :class:`WeightingScheme` turns the long- and short-context NLL of every token into a constant loss
weight. It composes, in this fixed order (docs/METHOD.md): comparison -> transforms -> truncation ->
sparsification -> normalization -> interpolation. Every scheme of the paper's table is one point of
that space; ``WeightingScheme.parse`` reads the named ones and a general ``custom:`` form, and
``str(scheme)`` writes a spec that parses back to an equal scheme, so a run's config, its logs and
its report all name the scheme with the same string.

Spec grammar (case-insensitive, spaces ignored)::

    uniform | dense:<λ> | sparse:<κ> | longce:<γ> | ppmi:<s>:<κ> | npmi:<s>:<κ> | rho1:<κ>
    exact:<α>[:<τ>]                      exposure balancing alone (EXACT, tokenweight.exposure)
    <scheme>*exact:<α>[:<τ>]             a named scheme times exposure balancing, renormalised
    custom:[key=value[,key=value...]]    keys (each at most once, any order):
        cmp=difference|quotient   transforms=<t>[+<t>...] with t in abs, neg, exp, relu, shift:<s>
        trunc=<γ>   kappa=<κ>   norm=l1|softmax|none   lambda=<λ>   seed=<int>
        exposure=<α>   tail=<τ>   base=<β>     (times exposure balancing, renormalised)
        protect=<τ>                            (first-window protection; 0: the base window w)
    <scheme>*protect[:<τ>]               the first window (prefix < τ, default w) weighs 1, the rest renormalised
    e.g. custom:transforms=abs+shift:2,trunc=5,kappa=0.3,norm=l1,lambda=0.5,cmp=quotient,seed=3

Conventions beyond docs/METHOD.md (each chosen so that results are exact and reproducible):

- A scheme with no transforms, truncation, sparsification or normalization is *uniform*: raw
  scores are signed log-ratios and are never used as weights directly. With ``interpolation == 1``
  a scheme is uniform too. Uniform schemes return exactly 1.0 on scored tokens without looking at
  ``short_nll`` (``needs_short`` is False, so callers may skip the short-context pass).
- Top-κ keeps ``floor(κ·T)`` tokens, with κ taken as the decimal it is written as (its shortest
  ``repr``): κ = 0.29 keeps 29 of 100 tokens, where float arithmetic would give 28.
- L1 divides by ``Σ|w|`` (the L1 norm, as the reference implementation does); for non-negative
  weights, which every named scheme has, this is ``w·T/Σw`` and the mean weight is 1.
- The all-zero -> uniform rule belongs to normalization (it replaces 0/0). Without normalization
  an all-zero row stays zero; with it, ``floor(κ·T) = 0`` (short sequences, small κ) yields
  uniform weights rather than dropping the sequence.
- The unit of T, top-κ, normalization and the all-zero rule is a row (a sequence), or with
  ``groups`` each group of a row (a document of a packed row): a group is weighted exactly as
  the same tokens alone in a row, so packing documents does not change their weights.
"""

from __future__ import annotations

import dataclasses
import math
import re
from fractions import Fraction
from numbers import Integral, Real

import torch

COMPARISONS = ("difference", "quotient")
NORMALIZATIONS = ("l1", "softmax")
TRANSFORMS = ("abs", "neg", "exp", "relu", "shift:<s>")
_QUOTIENT_EPS = 1e-5  # the reference implementation's smoothing of the quotient
_NAMED = {  # name -> (positional parameters, builder)
    "uniform": ((), lambda: WeightingScheme()),
    "dense": (("λ",), lambda lam: WeightingScheme(transforms=("abs",), normalization="l1", interpolation=lam)),
    "sparse": (("κ",), lambda k: WeightingScheme(transforms=("abs",), sparsification=k, normalization="l1")),
    "longce": (("γ",), lambda g: WeightingScheme(transforms=("neg", "exp"), truncation=g)),
    "ppmi": (
        ("s", "κ"),
        lambda s, k: WeightingScheme(transforms=("neg", f"shift:{s}", "relu"), sparsification=k, normalization="l1"),
    ),
    "npmi": (
        ("s", "κ"),
        lambda s, k: WeightingScheme(transforms=(f"shift:{s}", "relu"), sparsification=k, normalization="l1"),
    ),
    "rho1": (("κ",), lambda k: WeightingScheme(sparsification=k, normalization="l1")),
    "exact": (("α",), lambda a: WeightingScheme(exposure=a)),
}
_RANGES = {  # numeric field -> (symbol, valid range, test)
    "truncation": ("γ", "(0, inf)", lambda x: x > 0),
    "sparsification": ("κ", "(0, 1]", lambda x: 0 < x <= 1),
    "interpolation": ("λ", "[0, 1]", lambda x: 0 <= x <= 1),
}
_KEYS = {  # custom-spec key (and field-name alias) -> field
    "exposure": "exposure",
    "tail": "exposure_tail",
    "base": "exposure_base",
    "protect": "protect",
    "cmp": "comparison",
    "transforms": "transforms",
    "trunc": "truncation",
    "kappa": "sparsification",
    "norm": "normalization",
    "lambda": "interpolation",
    "seed": "seed",
}
_KEYS.update({field: field for field in list(_KEYS.values())})
VALID_SPECS = (
    "uniform, dense:<λ>, sparse:<κ>, longce:<γ>, ppmi:<s>:<κ>, npmi:<s>:<κ>, rho1:<κ>, exact:<α>[:<τ>], "
    "<scheme>*exact:<α>[:<τ>], <scheme>*protect[:<τ>], or "
    "custom:key=value,... with keys cmp=difference|quotient, transforms=<t>+<t>... "
    "(t in abs, neg, exp, relu, shift:<s>), trunc=<γ>, kappa=<κ>, norm=l1|softmax|none, "
    "lambda=<λ>, seed=<int>, exposure=<α>, tail=<τ>, base=<β>, protect=<τ>"
)


def _fmt(x: float) -> str:
    """Shortest exact text of a float, without '.0' or 'e+' (so '+' can separate transforms)."""
    text = repr(float(x)).replace("e+", "e")
    return text[:-2] if text.endswith(".0") else text


def _canonical_transform(t) -> str:
    name = str(t).strip().lower()
    if name in ("abs", "neg", "exp", "relu"):
        return name
    if name.startswith("shift:"):
        try:
            s = float(name[len("shift:") :])
        except ValueError:
            s = None
        if s is None or not math.isfinite(s) or s <= 0:
            raise ValueError(
                f"transforms: shift value in {t!r} is invalid: s must be a finite number > 0 "
                f"(the shift subtracts log s)"
            )
        return f"shift:{_fmt(s)}"
    raise ValueError(f"transforms: unknown transform {t!r}: valid transforms are {', '.join(TRANSFORMS)}")


@dataclasses.dataclass(frozen=True)
class WeightingScheme:
    """Scores -> weights, composed as in docs/METHOD.md step 2 (see the module docstring).

    Fields: ``comparison`` ('difference': d = L_long - L_short; 'quotient':
    (L_long + 1e-5) / (L_short + 1e-5)); ``transforms`` (applied in order: 'abs', 'neg', 'exp',
    'relu', 'shift:<s>' = d - log s); ``truncation`` γ > 0 (clip from above); ``sparsification``
    κ in (0, 1] (top floor(κ·T) scored tokens -> 1, others 0, ties broken uniformly at random);
    ``normalization`` ('l1': w·T/Σ|w|; 'softmax': T·softmax(w); all-zero rows -> 1);
    ``interpolation`` λ in [0, 1] (λ + (1 - λ)·w); ``seed`` of the default tie-breaking generator.
    """

    comparison: str = "difference"
    transforms: tuple[str, ...] = ()
    truncation: float | None = None
    sparsification: float | None = None
    normalization: str | None = None
    interpolation: float | None = None
    seed: int = 0
    exposure: float | None = None
    exposure_tail: int | None = None
    exposure_base: float = 2.0
    #: first-window protection: targets whose effective context is shorter than τ weigh exactly 1 and
    #: the scheme's weights of the others are renormalised to mean 1 over them; τ = this value, 0 =
    #: the base window w (given at call time), None = off
    protect: int | None = None

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        cmp = str(self.comparison).strip().lower()
        if cmp not in COMPARISONS:
            raise ValueError(f"comparison={self.comparison!r} is invalid: must be one of {', '.join(COMPARISONS)}")
        put("comparison", cmp)
        transforms = self.transforms
        if isinstance(transforms, str):  # "abs+shift:2", as in the spec
            transforms = [t for t in re.split(r"(?<![eE])\+", transforms) if t.strip()]
        put("transforms", tuple(_canonical_transform(t) for t in transforms))
        for name, (symbol, valid, ok) in _RANGES.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or not ok(value):
                raise ValueError(f"{name}={value!r} is invalid: {symbol} must be a finite number in {valid}")
            put(name, float(value))
        if self.normalization is not None:
            norm = str(self.normalization).strip().lower()
            if norm not in NORMALIZATIONS:
                raise ValueError(
                    f"normalization={self.normalization!r} is invalid: must be one of "
                    f"{', '.join(NORMALIZATIONS)} or None"
                )
            put("normalization", norm)
        if isinstance(self.seed, bool) or not isinstance(self.seed, Integral) or not 0 <= self.seed < 2**64:
            raise ValueError(f"seed={self.seed!r} is invalid: must be an integer in [0, 2**64)")
        put("seed", int(self.seed))
        if self.exposure is not None:
            a = self.exposure
            if isinstance(a, bool) or not isinstance(a, Real) or not math.isfinite(a) or a < 0:
                raise ValueError(f"exposure={a!r} is invalid: α must be a finite number >= 0")
            put("exposure", float(a))
        t = self.exposure_tail
        if t is not None:
            if isinstance(t, float) and t.is_integer():
                t = int(t)
            if isinstance(t, bool) or not isinstance(t, Integral) or t < 1:
                raise ValueError(f"exposure_tail={self.exposure_tail!r} is invalid: τ must be an integer >= 1")
            put("exposure_tail", int(t))
        b = self.exposure_base
        if isinstance(b, bool) or not isinstance(b, Real) or not math.isfinite(b) or b <= 1:
            raise ValueError(f"exposure_base={b!r} is invalid: β must be a finite number > 1")
        put("exposure_base", float(b))
        if self.exposure is None and (self.exposure_tail is not None or self.exposure_base != 2.0):
            raise ValueError("exposure_tail and exposure_base need exposure=<α>")
        if self.protect is not None:
            q = int(self.protect) if isinstance(self.protect, float) and self.protect.is_integer() else self.protect
            if isinstance(q, bool) or not isinstance(q, Integral) or q < 0:
                raise ValueError(f"protect={self.protect!r} is invalid: τ must be an integer >= 0 (0: the base window)")
            put("protect", int(q))

    # ---- properties ---------------------------------------------------------------------------
    @property
    def is_uniform(self) -> bool:
        """True when every scored token gets weight exactly 1, whatever the scores and positions."""
        return not self.needs_short and not self.exposure

    @property
    def needs_positions(self) -> bool:
        """True when the weights read every target's effective context (``prefix=``): exposure
        balancing, first-window protection."""
        return self.exposure is not None or self.protect is not None

    @property
    def needs_short(self) -> bool:
        """False when the weights do not depend on short-context NLL (callers may skip that pass):
        no contrastive step, or λ = 1 (exposure balancing needs only positions)."""
        no_steps = not (
            self.transforms
            or self.truncation is not None
            or self.sparsification is not None
            or self.normalization is not None
        )
        return not (no_steps or self.interpolation == 1)

    # ---- specs --------------------------------------------------------------------------------
    @classmethod
    def parse(cls, spec: str | WeightingScheme) -> WeightingScheme:
        """Read a spec (grammar in the module docstring); ``parse(str(s)) == s`` for every scheme."""
        if isinstance(spec, WeightingScheme):
            return spec

        def bad(what: str) -> ValueError:
            return ValueError(f"invalid weighting spec {spec!r}: {what}; valid forms: {VALID_SPECS}")

        if not isinstance(spec, str):
            raise bad(f"expected a string, got {type(spec).__name__}")
        text = re.sub(r"\s+", "", spec).lower()
        if "*" in text:  # <scheme>*exact:<α>[:<τ>]*protect[:<τ>]: a scheme with its modifiers
            left, *mods = text.split("*")
            try:
                scheme = cls.parse(left)
            except ValueError as err:
                raise bad(str(err).partition("; valid forms")[0]) from None
            seen = set()
            for mod in mods:
                kind = mod.partition(":")[0]
                kind = "exact" if kind == "custom" else kind  # exposure balancing written as custom:exposure=...
                if kind in seen or kind not in ("exact", "protect"):
                    raise bad("a product is <scheme>*exact:<α>[:<τ>] and/or *protect[:<τ>], each at most once")
                seen.add(kind)
                if kind == "protect":
                    tau = mod.partition(":")[2]
                    if tau and not re.fullmatch(r"\d+", tau):
                        raise bad(f"protect τ={tau!r} is not a non-negative integer")
                    if scheme.protect is not None:
                        raise bad("protect is given twice")
                    scheme = dataclasses.replace(scheme, protect=int(tau) if tau else 0)
                    continue
                try:
                    exposure = cls.parse(mod)
                except ValueError as err:
                    raise bad(str(err).partition("; valid forms")[0]) from None
                alone = dataclasses.replace(exposure, exposure=None, exposure_tail=None, exposure_base=2.0)
                if exposure.exposure is None or not alone.is_uniform or exposure.protect is not None:
                    raise bad("a product is <scheme>*exact:<α>[:<τ>], with exposure balancing on the right only")
                if scheme.exposure is not None:
                    raise bad("exposure balancing is given twice")
                scheme = dataclasses.replace(
                    scheme,
                    exposure=exposure.exposure,
                    exposure_tail=exposure.exposure_tail,
                    exposure_base=exposure.exposure_base,
                )
            return scheme
        kind, _, rest = text.partition(":")
        try:
            if kind == "custom":
                return cls(**cls._custom_fields(rest, bad))
            if kind not in _NAMED:
                raise bad(f"unknown scheme {kind!r}")
            names, build = _NAMED[kind]
            args = rest.split(":") if rest else []
            if kind == "exact" and len(args) == 2:  # exact:<α>:<τ>
                if not re.fullmatch(r"\d+", args[1]):
                    raise bad(f"τ={args[1]!r} is not a positive integer")
                return cls(exposure=float(args[0]), exposure_tail=int(args[1]))
            if len(args) != len(names):
                raise bad(f"{kind} takes {len(names)} parameter(s) ({', '.join(names) or 'none'}), got {len(args)}")
            values = []
            for name, arg in zip(names, args):
                try:
                    values.append(float(arg))
                except ValueError:
                    raise bad(f"{name}={arg!r} is not a number") from None
            return build(*values)
        except ValueError as err:
            if str(err).startswith("invalid weighting spec"):
                raise
            raise bad(str(err)) from None

    @staticmethod
    def _custom_fields(rest: str, bad) -> dict:
        fields = {}
        for item in filter(None, rest.split(",")):
            key, eq, value = item.partition("=")
            if not eq or key not in _KEYS:
                raise bad(f"{item!r} is not key=value with a known key")
            field = _KEYS[key]
            if field in fields:
                raise bad(f"key {key!r} is given twice")
            if field in ("comparison", "transforms"):
                fields[field] = value
            elif field == "normalization":
                fields[field] = None if value == "none" else value
            elif field in ("seed", "exposure_tail", "protect"):
                if not re.fullmatch(r"\d+", value):
                    raise bad(f"{key}={value!r} is not a non-negative integer")
                fields[field] = int(value)
            elif value == "none":
                fields[field] = None
            else:
                try:
                    fields[field] = float(value)
                except ValueError:
                    raise bad(f"{key}={value!r} is not a number") from None
        return fields

    def __str__(self) -> str:
        if self.protect is not None:  # a modifier of whatever comes before it
            rest = str(dataclasses.replace(self, protect=None))
            if rest.startswith("custom:"):
                return f"{rest},protect={self.protect}" if rest != "custom:" else f"custom:protect={self.protect}"
            return f"{rest}*protect" + (f":{self.protect}" if self.protect else "")
        base = dataclasses.replace(self, exposure=None, exposure_tail=None, exposure_base=2.0)
        if self.exposure is not None and not base.is_uniform and not str(base).startswith("custom:"):
            exposure = WeightingScheme(
                exposure=self.exposure, exposure_tail=self.exposure_tail, exposure_base=self.exposure_base
            )
            return f"{base}*{exposure}"  # a named scheme times exposure balancing
        if self.seed == 0:
            shifts = [float(t[6:]) for t in self.transforms if t.startswith("shift:")]
            params = {
                "uniform": (),
                "dense": (self.interpolation,),
                "sparse": (self.sparsification,),
                "longce": (self.truncation,),
                "rho1": (self.sparsification,),
                "exact": (self.exposure,),
            }
            if self.exposure is not None and self.exposure_base == 2.0 and self.exposure_tail is not None:
                if WeightingScheme(exposure=self.exposure, exposure_tail=self.exposure_tail) == self:
                    return f"exact:{_fmt(self.exposure)}:{self.exposure_tail}"
            if len(shifts) == 1:
                params["ppmi"] = params["npmi"] = (shifts[0], self.sparsification)
            for kind, values in params.items():
                if all(v is not None for v in values) and _NAMED[kind][1](*values) == self:
                    return ":".join([kind] + [_fmt(v) for v in values])
        parts = []
        if self.comparison != "difference":
            parts.append(f"cmp={self.comparison}")
        if self.transforms:
            parts.append("transforms=" + "+".join(self.transforms))
        for key, value in (("trunc", self.truncation), ("kappa", self.sparsification)):
            if value is not None:
                parts.append(f"{key}={_fmt(value)}")
        if self.normalization is not None:
            parts.append(f"norm={self.normalization}")
        if self.interpolation is not None:
            parts.append(f"lambda={_fmt(self.interpolation)}")
        if self.seed != 0:
            parts.append(f"seed={self.seed}")
        if self.exposure is not None:
            parts.append(f"exposure={_fmt(self.exposure)}")
            if self.exposure_tail is not None:
                parts.append(f"tail={self.exposure_tail}")
            if self.exposure_base != 2.0:
                parts.append(f"base={_fmt(self.exposure_base)}")
        return "custom:" + ",".join(parts)

    # ---- tensors ------------------------------------------------------------------------------
    def scores(self, long_nll: torch.Tensor, short_nll: torch.Tensor) -> torch.Tensor:
        """Raw comparison d of two NLL tensors of one shape -> float32, detached, same shape."""
        long, short = _as_float(long_nll, "long_nll"), _as_float(short_nll, "short_nll")
        _check_shapes(long, short)
        if self.comparison == "quotient":
            return (long + _QUOTIENT_EPS) / (short.to(long.device) + _QUOTIENT_EPS)
        return long - short.to(long.device)

    @torch.no_grad()
    def __call__(
        self,
        long_nll: torch.Tensor,
        short_nll: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        groups: torch.Tensor | None = None,
        keys: torch.Tensor | None = None,
        prefix: torch.Tensor | None = None,
        tail: int | None = None,
    ) -> torch.Tensor:
        """Weights for ``long_nll``/``short_nll`` [b, T] (or [T]) -> float32 [b, T] (or [T]), detached.

        ``mask`` (bool or 0/1, same shape) marks scored tokens; unscored tokens get 0 and take no
        part in T, top-κ or normalization (their NLL values are never read, NaN included).
        ``generator`` breaks top-κ ties; None means a fresh one seeded with ``self.seed``.
        ``keys`` (float64 of the same shape, uniform in [0, 1)): top-κ's random tie-breaking keys
        themselves, instead of drawing them from ``generator``; a tie goes to the smaller key
        (:func:`tokenweight.token_weighting.tie_keys` draws them from each sequence's content, so
        that a sequence gets the same weights in any batch, on any process).
        ``prefix`` (integer, same shape): every target's effective context, for exposure
        balancing (:mod:`tokenweight.exposure`); ``tail``: its τ when the scheme has none (the base
        window, which the caller knows).
        ``short_nll`` may be None for uniform schemes.

        ``groups`` (integer, same shape; None: each row is one group): the group of every token,
        -1 = not scored (as ``mask`` False). Every group of a row is then weighted as a sequence
        of its own: ``T``, top-κ's ``floor(κ·T)``, the L1/softmax normalisation and the all-zero
        rule are per group, so a group's weights are exactly those it gets alone (packed rows,
        one group per document: ``weight_norm: document``, docs/TRAINING.md). Elementwise
        schemes (uniform, LongCE) are the same with and without groups; so is a row of one group.
        """
        long = _as_float(long_nll, "long_nll")
        if long.dim() not in (1, 2):
            raise ValueError(f"long_nll must have shape [b, T] or [T], got {tuple(long.shape)}")
        short = None if short_nll is None else _as_float(short_nll, "short_nll").to(long.device)
        _check_shapes(long, short)
        m = torch.ones(long.shape, dtype=torch.bool, device=long.device) if mask is None else _as_mask(mask, long)
        g = None if groups is None else _as_groups(groups, long)
        if keys is not None:
            keys = torch.as_tensor(keys, device=long.device)
            if keys.shape != long.shape or keys.dtype != torch.float64:
                raise ValueError(f"keys must be a float64 tensor of shape {tuple(long.shape)}, got {tuple(keys.shape)}")
        if g is not None:
            m = m & (g >= 0)
        one_seq = long.dim() == 1
        if one_seq:
            long, m = long.unsqueeze(0), m.unsqueeze(0)
            short = None if short is None else short.unsqueeze(0)
            g = None if g is None else g.unsqueeze(0)
            keys = None if keys is None else keys.unsqueeze(0)
        if self.needs_positions:
            if prefix is None:
                raise ValueError(f"weighting scheme {self} reads positions: pass prefix= (effective contexts)")
            prefix = torch.as_tensor(prefix, device=long.device).expand(long.shape).reshape(m.shape)
        if self.exposure is not None and (self.exposure_tail or tail) is None:
            raise ValueError(f"weighting scheme {self} has no tail τ: write exact:<α>:<τ> or pass tail= (w)")
        if self.protect == 0 and tail is None:
            raise ValueError(f"weighting scheme {self} protects the base window: write protect:<τ> or pass tail= (w)")
        if self.is_uniform:
            w = m.to(torch.float32)
        elif short is None and self.needs_short:
            raise ValueError(f"short_nll is required by weighting scheme {self} (only uniform schemes work without it)")
        elif g is None:
            w = self._weights(long, short, m, generator, keys, prefix, tail)
        else:
            w = self._grouped_weights(long, short, m, g, generator, keys, prefix, tail)
        return w.squeeze(0) if one_seq else w

    def _grouped_weights(self, long, short, m, g, generator, row_keys=None, prefix=None, tail=None):
        """:meth:`_weights` with every ``(row, group)`` as a row of its own: its scored tokens, in
        order, are gathered into one row of a ``[G, T_max]`` batch, weighted, and put back. Top-κ's
        random keys are drawn in the ``[b, T]`` layout and gathered along, so a row that is one group
        keeps the tokens it keeps without groups, ties included (its sums may round differently)."""
        rows, cols = m.nonzero(as_tuple=True)  # row-major: a group's tokens stay in order
        w = torch.zeros(long.shape, dtype=torch.float32, device=long.device)
        if rows.numel() == 0:
            return w
        key = rows * (int(g.max()) + 1) + g[rows, cols]
        _, inv = torch.unique(key, return_inverse=True)
        counts = torch.bincount(inv)
        order = torch.argsort(inv, stable=True)
        pos = torch.empty_like(inv)
        pos[order] = torch.arange(len(inv), device=inv.device) - (torch.cumsum(counts, 0) - counts)[inv[order]]
        shape = (len(counts), int(counts.max()))
        gm = torch.zeros(shape, dtype=torch.bool, device=long.device).index_put_((inv, pos), torch.tensor(True))
        gl = long.new_zeros(shape).index_put_((inv, pos), long[rows, cols])
        gs = (
            long.new_zeros(shape) if short is None else short.new_zeros(shape).index_put_((inv, pos), short[rows, cols])
        )
        gp = None if prefix is None else prefix.new_zeros(shape).index_put_((inv, pos), prefix[rows, cols])
        keys = None
        if self.sparsification is not None:
            keys = torch.full(shape, 2.0, dtype=torch.float64, device=long.device)  # > every key: padding
            drawn = self._keys(long.shape, generator, long.device) if row_keys is None else row_keys
            keys[inv, pos] = drawn.to(long.device)[rows, cols]
        w[rows, cols] = self._weights(gl, gs, gm, generator, keys, gp, tail)[inv, pos]
        return w

    def _weights(self, long, short, m, generator, keys=None, prefix=None, tail=None):
        """[b, T] float32 NLLs and bool mask -> [b, T] weights (steps 1-5 of docs/METHOD.md), times
        exposure balancing (:func:`tokenweight.exposure.apply_exposure`) when the scheme has it, then
        first-window protection (targets with prefix < τ: 1; the others renormalised to mean 1)."""
        w = self._contrastive(long, short, m, generator, keys) if self.needs_short else m.to(torch.float32)
        if self.exposure is not None:
            from tokenweight.exposure import apply_exposure

            w = apply_exposure(w, prefix, m, self.exposure, self.exposure_tail or tail, self.exposure_base)
        if self.protect is None:
            return w
        first = m & (prefix < (self.protect or tail))  # the first window: weight 1, as plain CE
        rest = m & ~first
        total = torch.where(rest, w, 0.0).sum(1, keepdim=True)
        scale = rest.sum(1, keepdim=True) / total.clamp(min=torch.finfo(torch.float32).tiny)
        w = torch.where(rest, torch.where(total > 0, w * scale, 1.0), w)
        return torch.where(first, 1.0, w).to(torch.float32)

    def _contrastive(self, long, short, m, generator, keys=None):
        """Steps 1-5 of docs/METHOD.md: [b, T] -> [b, T] float32 weights."""
        w = self.scores(torch.where(m, long, 0.0), torch.where(m, short, 0.0))
        for t in self.transforms:
            if t == "abs":
                w = w.abs()
            elif t == "neg":
                w = -w
            elif t == "exp":
                w = w.exp()
            elif t == "relu":
                w = w.clamp(min=0)
            else:
                w = w - math.log(float(t[6:]))
        if self.truncation is not None:
            w = w.clamp(max=self.truncation)
        if not bool(torch.isfinite(w).all()):  # one check covers bad inputs and exp overflow
            if not bool(torch.isfinite(long[m]).all() & torch.isfinite(short[m]).all()):
                raise ValueError("long_nll/short_nll hold NaN or inf at scored tokens: mask them out or fix the scores")
            raise ValueError(
                f"weighting scheme {self} overflows to inf/NaN on these scores: add a "
                f"truncation (trunc=<γ>) after 'exp'"
            )
        w = torch.where(m, w, 0.0)
        if self.sparsification is not None:
            w = self._top_kappa(w, m, generator, keys)
        if self.normalization == "l1":
            total = w.abs().sum(1, keepdim=True)
            w = w * m.sum(1, keepdim=True) / total.clamp(min=torch.finfo(torch.float32).tiny)
        elif self.normalization == "softmax":
            total = w.abs().sum(1, keepdim=True)
            w = torch.softmax(w.masked_fill(~m, -math.inf), dim=1) * m.sum(1, keepdim=True)
        if self.normalization is not None:
            w = torch.where(total == 0, 1.0, w)  # all-zero rows become uniform
        if self.interpolation is not None:
            w = self.interpolation + (1 - self.interpolation) * w
        return torch.where(m, w, 0.0).to(torch.float32)

    def _top_kappa(self, w, m, generator, keys=None):
        """Top floor(κ·T) scored tokens per row -> 1, others 0; ties broken uniformly at random.

        A uniformly random permutation (argsort of float64 random keys: collisions are negligible)
        followed by a *stable* descending sort by value leaves tied tokens in random order, so the
        first k of the result are a uniformly random choice among ties. Fully vectorised. ``keys``:
        the random keys (``[b, T]`` float64) instead of drawing them (:meth:`_grouped_weights`).
        """
        b, n = w.shape
        kappa = Fraction(repr(self.sparsification))
        ks = [math.floor(kappa * t) for t in m.sum(1).tolist()]
        k = torch.tensor(ks, device=w.device).unsqueeze(1)
        if keys is None:
            keys = self._keys((b, n), generator, w.device)
        perm = keys.to(w.device).argsort(dim=1)
        values = w.masked_fill(~m, -math.inf).gather(1, perm)
        order = perm.gather(1, values.sort(dim=1, descending=True, stable=True).indices)
        keep = (torch.arange(n, device=w.device).unsqueeze(0) < k).to(w.dtype)
        return torch.zeros_like(w).scatter(1, order, keep)

    def _keys(self, shape, generator, device) -> torch.Tensor:
        """Top-κ's float64 random keys of ``shape`` (a fresh generator seeded with ``seed`` when None)."""
        if generator is None:
            generator = torch.Generator(device=device).manual_seed(self.seed)
        return torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float64)


def _as_float(x, name: str) -> torch.Tensor:
    """Any tensor (bf16/fp16, requiring grad) -> detached float32; never lets gradient through."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{name} must be a tensor of NLL values: {err}") from None
    return x.detach().to(torch.float32)


def _check_shapes(long: torch.Tensor, short: torch.Tensor | None) -> None:
    if short is not None and short.shape != long.shape:
        raise ValueError(
            f"long_nll and short_nll must have one shape, got {tuple(long.shape)} and {tuple(short.shape)}"
        )


def _as_groups(groups, long: torch.Tensor) -> torch.Tensor:
    """Integer group ids of ``long``'s shape -> long tensor on ``long``'s device (-1: not scored)."""
    g = torch.as_tensor(groups, device=long.device)
    if g.shape != long.shape:
        raise ValueError(f"groups shape {tuple(g.shape)} differs from long_nll shape {tuple(long.shape)}")
    if g.dtype.is_floating_point or g.dtype == torch.bool or g.is_complex():
        raise ValueError(f"groups (dtype {g.dtype}) must hold integer group ids (-1: not scored)")
    if g.numel() and int(g.min()) < -1:
        raise ValueError("groups must be >= -1 (-1: not scored)")
    return g.long()


def _as_mask(mask, long: torch.Tensor) -> torch.Tensor:
    """bool or 0/1 mask of ``long``'s shape -> bool tensor on ``long``'s device."""
    m = torch.as_tensor(mask, device=long.device)
    if m.shape != long.shape:
        raise ValueError(f"mask shape {tuple(m.shape)} differs from long_nll shape {tuple(long.shape)}")
    if m.dtype != torch.bool:
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError(f"mask (dtype {m.dtype}) must be bool or hold only 0 and 1")
        m = m != 0
    return m
