"""Batch explanations (``Bundle.explain_batch``) equal the one-row reference (``Bundle.explain``) on trained bundles.

``explain`` reconstructs the whole row densely; ``explain_batch`` gathers the output kernel at the present places only,
ranks a whole batch with one sort and maps OOV places to raw tokens with Arrow kernels. They share no ranking or label
code, so agreement here checks both.
"""

from __future__ import annotations

import numpy as np
import pytest

from monitor.bundle import load_bundle
from monitor.generate import SeedLikeGenerator
from monitor.train import settings_for, train_bundle

pytestmark = pytest.mark.slow

#: name → (preset, overrides): one bundle per encoding, trained for a few epochs on 1,500 rows (seconds each).
BUNDLES = {
    "auto": ("auto", {}),  # positional tokens, counts of all tokens, shapes and the length
    "positional": ("seed", {}),
    "multi_hot_oov": ("original", {"oov": True}),
    "multi_hot_no_oov": ("original", {}),
    "counts": ("logkeys", {}),
}
TINY = {"epochs": 3, "hidden": (16,), "bottleneck": 4}


@pytest.fixture(scope="module", params=list(BUNDLES))
def bundle(request, tmp_path_factory):
    name, overrides = BUNDLES[request.param]
    train = SeedLikeGenerator(3).normal(1500)
    vec, mod, _ = settings_for(name, train, **TINY, **overrides)
    path = tmp_path_factory.mktemp(request.param) / "bundle"
    train_bundle(train, path, vec, mod, verbose=0, log=lambda m: None)
    return load_bundle(path)


def batch_of_every_kind() -> list[str]:
    g = SeedLikeGenerator(4)
    rows = g.normal(40)
    for kind in ("foreign", "unknown", "missing", "extra", "reordered"):
        rows += g.abnormal(8, kind)
    rows += [
        "",  # no tokens
        "!!! ... ,,,",  # only punctuation: no tokens
        "zz qq zz",  # only unknown tokens, one repeated
        "DF zz FR qq",  # unknown tokens at positions 1 and 3
        "DF 36 FR GX567 zz",  # the unknown token is past max_length 4 (cut, except with counts)
        "df df df df",  # one token four times
    ]
    return rows + rows[:10]  # repeats are explained once and copied


def assert_items_equal(got: list[dict], want: list[dict], context) -> None:
    assert [(i["token"], i["position"]) for i in got] == [(i["token"], i["position"]) for i in want], context
    np.testing.assert_allclose(
        [i["contribution"] for i in got], [i["contribution"] for i in want], rtol=1e-4, atol=1e-9, err_msg=str(context)
    )


@pytest.mark.parametrize("top", [1, 3, 10])
def test_batch_equals_the_one_row_reference(bundle, top):
    rows = batch_of_every_kind()
    explained = bundle.explain_batch(rows, top=top)
    assert explained.n_rows == len(rows)
    lists = explained.to_lists()
    errors = bundle.errors(rows)
    n_items = 0
    for sequence, got, error in zip(rows, lists, errors, strict=True):
        want = [i for i in bundle.explain(sequence, top=top) if i["kind"] == "unexpected"]
        assert_items_equal(got, want, sequence)
        assert len(got) <= top
        if np.isnan(error):
            assert got == []
        else:
            assert got, sequence  # every scored row has at least one poorly reconstructed present place
            assert sum(i["contribution"] for i in got) <= error * (1 + 1e-5)
        n_items += len(got)
    assert n_items > len(rows) * min(top, 2) * 0.5
    top_tokens = explained.top_tokens()
    assert top_tokens.tolist() == [" ".join(i["token"] for i in items) for items in lists]


def test_every_place_of_explain_adds_up_to_the_error(bundle):
    a, b, c, d = bundle.vectorizer.vocabulary[:4]
    rows = [f"{a} zz {b} qq", f"{a} {b} {c} {d}", a]
    for sequence, error in zip(rows, bundle.errors(rows)):
        items = bundle.explain(sequence, top=bundle.vectorizer.n_features)
        assert {i["kind"] for i in items} == {"unexpected", "missing"}
        assert sum(i["contribution"] for i in items) == pytest.approx(error, rel=1e-4)
        contributions = [i["contribution"] for i in items]
        assert contributions == sorted(contributions, reverse=True)


def test_unknown_tokens_are_shown_raw(bundle):
    s = bundle.vectorizer.settings
    a, b, c, d = bundle.vectorizer.vocabulary[:4]
    rows = [f"{a} zz {b} qq", "zz qq zz", f"{a} {b} {c} {d} zz", f"{a} {b} {c} {d}"]
    explained = bundle.explain_batch(rows, top=100)
    unknown = explained.unknown.to_pylist()
    lists = explained.to_lists()
    # Shape and length places read <shape A9>, <length 3>: not tokens.
    oov_items = [[i for i in items if i["token"] not in bundle.vectorizer.vocabulary and not i["token"].startswith("<")]
                 for items in lists]
    if not s.oov:  # unknown tokens are dropped before encoding: nothing stands for them
        assert unknown == [[], [], [], []]
        assert oov_items == [[], [], [], []]
        return
    if s.bag != "none":  # positional places show the token there; the bag's OOV place all unknown ones, however far
        assert unknown == [["zz", "qq"], ["zz", "qq", "zz"], [], []]
        key = lambda i: (-1 if i["position"] is None else i["position"], i["token"])  # noqa: E731
        assert sorted(map(key, oov_items[0])) == [(-1, "zz qq"), (1, "zz"), (3, "qq")]
        assert sorted(map(key, oov_items[1])) == [(-1, "zz qq"), (0, "zz"), (1, "qq"), (2, "zz")]
        assert sorted(map(key, oov_items[2])) == [(-1, "zz")]  # past max_length 4: only the bag saw it
        assert oov_items[3] == []
    elif s.encoding == "positional":
        assert unknown == [["zz", "qq"], ["zz", "qq", "zz"], [], []]
        assert sorted((i["position"], i["token"]) for i in oov_items[0]) == [(1, "zz"), (3, "qq")]
        assert sorted((i["position"], i["token"]) for i in oov_items[1]) == [(0, "zz"), (1, "qq"), (2, "zz")]
    elif s.max_length is None:  # counts: every token is kept, the OOV place lists the distinct unknown ones
        assert unknown == [["zz", "qq"], ["zz", "qq", "zz"], ["zz"], []]
        assert [[i["token"] for i in items] for items in oov_items] == [["zz qq"], ["zz qq"], ["zz"], []]
    else:  # multi-hot, max_length 4: one shared OOV place; the fifth token is cut
        assert unknown == [["zz", "qq"], ["zz", "qq", "zz"], [], []]
        assert [[i["token"] for i in items] for items in oov_items] == [["zz qq"], ["zz qq"], [], []]
    assert "<oov>" not in explained.tokens.to_pylist()


def test_take_copies_rows_in_any_order(bundle):
    rows = batch_of_every_kind()[:60]
    explained = bundle.explain_batch(rows, top=3)
    order = np.array([5, 0, 5, 59, 41, 40])
    taken = explained.take(order)
    assert taken.to_lists() == [explained.to_lists()[i] for i in order]
    assert taken.unknown.to_pylist() == [explained.unknown.to_pylist()[i] for i in order]
