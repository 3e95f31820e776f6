import numpy as np
import pytest

from monitor.errors import ConfigError
from monitor.vectorize import KERAS_FILTERS, Vectorizer, VectorizerSettings, tokenize


def dense(vectorizer, sequences):
    return vectorizer.encode(sequences).to_dense()


def test_multi_hot_of_ids_1_and_3_in_a_vocabulary_of_6():
    v = Vectorizer(VectorizerSettings(vocab_size=6, max_length=None, oov=False), ["a", "b", "c", "d", "e"])
    assert dense(v, ["a c"]).tolist() == [[0, 1, 0, 1, 0, 0]]


def test_padding_at_the_end_lights_index_0():
    v = Vectorizer(VectorizerSettings(vocab_size=6, max_length=4, oov=False), ["a", "b", "c", "d", "e"])
    assert dense(v, ["a c"]).tolist() == [[1, 1, 0, 1, 0, 0]]
    assert dense(v, ["a b c d"]).tolist() == [[0, 1, 1, 1, 1, 0]]


def test_truncating_at_the_end_keeps_the_first_tokens():
    v = Vectorizer(VectorizerSettings(vocab_size=6, max_length=2, oov=False), ["a", "b", "c", "d", "e"])
    assert dense(v, ["a b c d e"]).tolist() == [[0, 1, 1, 0, 0, 0]]


def test_repeated_token_lights_its_place_once():
    v = Vectorizer(VectorizerSettings(vocab_size=6, max_length=4, oov=False), ["a", "b"])
    assert dense(v, ["a a a a"]).tolist() == [[0, 1, 0, 0, 0, 0]]


def test_unknown_token_maps_to_the_oov_index():
    v = Vectorizer(VectorizerSettings(vocab_size=6, max_length=4), ["a", "b"])  # a=2, b=3
    enc = v.encode(["a zz", "a b"])
    assert enc.to_dense().tolist() == [[1, 1, 1, 0, 0, 0], [1, 0, 1, 1, 0, 0]]
    assert enc.oov_counts.tolist() == [1, 0]


def test_without_oov_unknown_tokens_are_dropped_and_later_tokens_move_up():
    v = Vectorizer(VectorizerSettings(vocab_size=6, max_length=2, oov=False), ["a", "b", "c"])
    assert dense(v, ["zz a b c"]).tolist() == [[0, 1, 1, 0, 0, 0]]


def test_positional_encoding_tells_reordered_parts_apart():
    v = Vectorizer(VectorizerSettings(vocab_size=4, max_length=3, encoding="positional"), ["a", "b"])  # a=2, b=3
    ab, ba = dense(v, ["a b", "b a"])
    assert np.flatnonzero(ab).tolist() == [0 * 4 + 2, 1 * 4 + 3, 2 * 4 + 0]
    assert np.flatnonzero(ba).tolist() == [0 * 4 + 3, 1 * 4 + 2, 2 * 4 + 0]
    assert v.token_of_column(1 * 4 + 3) == ("b", 1)


def test_counts_encoding_is_log1p_of_the_count_over_all_tokens():
    v = Vectorizer(VectorizerSettings(vocab_size=5, max_length=None, encoding="counts"), ["a", "b"])
    row = dense(v, ["a a b a zz"])[0]
    assert row == pytest.approx([0, np.log1p(1), np.log1p(3), np.log1p(1), 0])


def test_empty_and_punctuation_only_rows_have_no_tokens():
    v = Vectorizer(VectorizerSettings(vocab_size=6), ["a"])
    enc = v.encode(["", "!!! ...", "a"])
    assert enc.token_counts.tolist() == [0, 0, 1]


def test_fit_keeps_the_most_frequent_tokens_ties_by_first_appearance():
    v = Vectorizer.fit(["c b", "a b", "d a", "b"], VectorizerSettings(vocab_size=5))  # room for 3 tokens
    assert v.vocabulary == ["b", "a", "c"]


def test_tokenize_matches_keras_text_to_word_sequence():
    from tensorflow.keras.preprocessing.text import Tokenizer, text_to_word_sequence

    texts = ["DF 36 FR GX567", "Hello, World!  two  spaces", "tab\tand\nnewline", "a-b_c.d", "ÉCOLE été", " lead trail "]
    settings = VectorizerSettings()
    tokens = tokenize(texts, settings)
    ours = [[] for _ in texts]
    for row, tok in zip(tokens.rows.tolist(), tokens.values.to_pylist()):
        ours[row].append(tok)
    assert ours == [text_to_word_sequence(t, filters=KERAS_FILTERS) for t in texts]
    corpus = ["x y z", "y z", "z", "w x"]
    keras = Tokenizer()
    keras.fit_on_texts(corpus)
    ranked = [w for w, _ in sorted(keras.word_index.items(), key=lambda kv: kv[1])]
    assert Vectorizer.fit(corpus, VectorizerSettings(vocab_size=10, oov=False)).vocabulary == ranked


def test_batch_encoding_matches_a_record_by_record_loop():
    from monitor.bench import naive_vectorize

    rng = np.random.default_rng(3)
    words = ["df", "36", "fr", "gx567", "zz", "Q!", "a.b"]
    texts = [" ".join(rng.choice(words, rng.integers(0, 7))) for _ in range(500)]
    for settings in (
        VectorizerSettings(vocab_size=8),
        VectorizerSettings(vocab_size=8, oov=False),
        VectorizerSettings(vocab_size=8, encoding="positional", max_length=3),
        VectorizerSettings(vocab_size=8, encoding="counts", max_length=None),
        VectorizerSettings(vocab_size=8, encoding="multi_hot", max_length=None),
    ):
        v = Vectorizer.fit(texts, settings)
        np.testing.assert_allclose(v.encode(texts).to_dense(), naive_vectorize(v, texts), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"vocab_size": 2}, "vocab_size"),
        ({"max_length": 0}, "max_length"),
        ({"encoding": "onehot"}, "encoding"),
        ({"encoding": "positional", "max_length": None}, "positional"),
    ],
)
def test_bad_settings_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        VectorizerSettings(**kwargs)


# --- data-learned vocabulary and the extra channels ---------------------------------------------------------------

def test_token_shapes():
    import pyarrow as pa

    from monitor.vectorize import token_shapes

    tokens = ["GX567", "core.7156", "0x00000080", "10.0.0.1", "/var/log/x", "DF", "df", "deadbeef12", "12345678", "Abc"]
    assert token_shapes(pa.array(tokens)).to_pylist() == [
        "A9", "a.9", "H", "9.9.9.9", "/a/a/a", "A", "a", "H", "9", "Aa",
    ]
    assert token_shapes(pa.array(["x" * 40 + "9" * 40 + "." * 20])).to_pylist() == ["a9" + "." * 10]


def test_min_count_leaves_the_tail_out_of_the_vocabulary():
    s = VectorizerSettings(vocab_size=100, min_count=2)
    v = Vectorizer.fit(["a b c", "a b d", "a e f"], s)
    assert v.vocabulary == ["a", "b"]
    assert Vectorizer.fit(["a b c", "a b d"], VectorizerSettings(vocab_size=100)).vocabulary == ["a", "b", "c", "d"]


def test_channels_layout_and_encoding():
    s = VectorizerSettings(
        vocab_size=6, max_length=3, encoding="positional", bag="multi_hot", shapes=True, shape_vocab_size=4,
        length_signal=True, lower=False,
    )
    channels = s.channels()
    assert channels == {"tokens": (0, 18), "bag": (18, 6), "shapes": (24, 12), "length": (36, 5)}
    assert s.n_features == 41
    v = Vectorizer.fit(["DF 36 FR", "DF 37 FR", "DF 36 FR"], s)
    assert v.vocabulary == ["DF", "FR", "36", "37"] and v.shapes == ["A", "9"]
    enc = v.encode(["DF 36 FR GX567 x", "DF"])
    dense = enc.to_dense()
    on = [set(np.flatnonzero(row).tolist()) for row in dense]
    # Row 0: tokens DF, 36, FR at positions 0-2 (GX567 and x are cut), the bag sees all five (GX567 and x as OOV),
    # shapes A, 9, A at positions 0-2, and a length past max_length.
    df, fr, n36 = 2, 3, 4
    assert on[0] == {0 * 6 + df, 1 * 6 + n36, 2 * 6 + fr, 18 + df, 18 + n36, 18 + fr, 18 + 1,
                     24 + 0 * 4 + 2, 24 + 1 * 4 + 3, 24 + 2 * 4 + 2, 36 + 4}
    # Row 1: DF then padding; shape A then padding; length 1.
    assert on[1] == {0 * 6 + df, 1 * 6 + 0, 2 * 6 + 0, 18 + df, 24 + 2, 24 + 4 + 0, 24 + 8 + 0, 36 + 1}
    assert np.all(np.diff(enc.indices[enc.indptr[0]:enc.indptr[1]]) > 0)  # columns sorted within a row
    assert v.token_of_column(24 + 4 + 3) == ("<shape 9>", 1)
    assert v.token_of_column(24 + 4 + 1) == ("<unknown shape>", 1)
    assert v.token_of_column(36 + 4) == ("<length >3>", None)
    assert v.token_of_column(36 + 2) == ("<length 2>", None)
    assert v.token_of_column(18 + fr) == ("FR", None)
    assert v.token_of_column(6 + n36) == ("36", 1)
    # An unknown shape lights the unknown-shape place.
    assert 24 + 1 in set(np.flatnonzero(v.encode(["x.y"]).to_dense()[0]).tolist())


def test_counts_bag_and_validation():
    s = VectorizerSettings(vocab_size=5, max_length=2, encoding="positional", bag="counts")
    v = Vectorizer.fit(["a a a b"], s)
    row = v.encode(["a a a b"]).to_dense()[0]
    assert row[10 + 2] == pytest.approx(np.log1p(3)) and row[10 + 3] == pytest.approx(np.log1p(1))
    with pytest.raises(ConfigError, match="bag"):
        VectorizerSettings(bag="counts", encoding="multi_hot")
    with pytest.raises(ConfigError, match="max_length"):
        VectorizerSettings(shapes=True, max_length=None, encoding="counts")
    with pytest.raises(ConfigError, match="min_count"):
        VectorizerSettings(min_count=0)


def test_a_large_batch_is_encoded_in_chunks_with_the_same_rows(monkeypatch):
    """Training encodes up to a million rows at once; chunking bounds the intermediates and changes no row."""
    import pyarrow as pa

    import monitor.vectorize as vectorize

    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(40)] + ["core.7156", "0x00ff", "10.0.0.1"]
    rows = [" ".join(rng.choice(words, rng.integers(0, 9))) for _ in range(1_000)]
    settings = VectorizerSettings(vocab_size=30, max_length=5, encoding="positional", bag="counts", shapes=True,
                                  length_signal=True, lower=False)
    vectorizer = Vectorizer.fit(rows, settings)
    whole = vectorizer.encode(rows)
    monkeypatch.setattr(vectorize, "ENCODE_CHUNK_ROWS", 97)
    for batch in (rows, pa.array(rows)):
        chunked = vectorizer.encode(batch)
        for field in ("indptr", "indices", "data", "token_counts", "oov_counts"):
            np.testing.assert_array_equal(getattr(chunked, field), getattr(whole, field), err_msg=field)
    assert chunked.indptr[-1] == len(chunked.indices) > 1_000


# --- rare tokens apart from never-seen ones, leave one out in training ------------------------------------------------

def test_token_hashes_are_stable_distinct_and_independent_of_slicing():
    import pyarrow as pa

    from monitor.vectorize import token_hashes

    values = pa.array(["a", "ab", "ba", "abc", "a", "é", "x" * 300])
    h = token_hashes(values)
    assert h.dtype == np.uint64 and h[0] == h[4] and len(set(h.tolist())) == 6
    np.testing.assert_array_equal(token_hashes(values.slice(2, 3)), h[2:5])
    # Pinned: a bundle keeps these hashes, so the function must never change.
    assert int(token_hashes(pa.array(["core.7156"]))[0]) == 13415238053830530226
    many = pa.array([f"tok{i}" for i in range(200_000)])
    assert len(np.unique(token_hashes(many))) == 200_000


def test_rare_tokens_light_the_rare_place_and_training_rows_count_a_token_seen_once_as_new():
    from monitor.vectorize import OOV_INDEX, RARE_INDEX

    s = VectorizerSettings(vocab_size=10, max_length=2, encoding="positional", min_count=3, rare=True)
    train = ["a x", "a x", "a x", "a y", "a y", "a z"]  # x: 3 (own place), y: 2 (rare), z: 1 (rare live, new in training)
    v = Vectorizer.fit(train, s)
    assert v.vocabulary == ["a", "x"] and v.first_index == 3
    assert len(v.rare.once) == 1 and len(v.rare.twice_or_more) == 1

    def second(rows, training=False):
        return (v.encode(rows, training=training).indices.reshape(-1, 2)[:, 1] - s.vocab_size).tolist()

    x = v.first_index + 1
    assert second(["a x", "a y", "a z", "a new"]) == [x, RARE_INDEX, RARE_INDEX, OOV_INDEX]
    assert second(["a x", "a y", "a z", "a new"], training=True) == [x, RARE_INDEX, OOV_INDEX, OOV_INDEX]
    # Only never-seen tokens count as out of vocabulary.
    assert v.encode(["a y", "a z", "a new"]).oov_counts.tolist() == [0, 0, 1]
    assert v.token_of_column(s.vocab_size + RARE_INDEX) == ("<rare>", 1)
    assert "fewer than 3 times" in s.describe()


def test_rare_needs_oov_and_a_min_count_of_three():
    with pytest.raises(ConfigError, match="rare"):
        VectorizerSettings(min_count=2, rare=True)
    with pytest.raises(ConfigError, match="rare"):
        VectorizerSettings(min_count=3, rare=True, oov=False)
    from monitor.vectorize import RareTokens

    with pytest.raises(ConfigError, match="rare off"):
        Vectorizer(VectorizerSettings(), [], rare=RareTokens(np.array([1], np.uint64), np.zeros(0, np.uint64)))


def test_rare_tokens_past_the_cap_count_as_never_seen(monkeypatch):
    import monitor.vectorize as vectorize

    monkeypatch.setattr(vectorize, "RARE_MAX_TOKENS", 2)
    s = VectorizerSettings(vocab_size=10, max_length=1, min_count=3, rare=True)
    v = Vectorizer.fit(["b", "b", "c", "d", "e"], s)  # b twice first, then the first of the tokens seen once
    assert len(v.rare.twice_or_more) == 1 and len(v.rare.once) == 1
    assert v.encode(["b", "c", "d"]).oov_counts.tolist() == [0, 0, 1]
