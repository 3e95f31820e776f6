"""Rare and never-seen tokens under ``auto``: a value without a place of its own is scored by how its context's
values usually are, new or seen before."""

import numpy as np

from monitor.train import settings_for, train_bundle


def test_a_new_value_is_loud_where_values_recur_and_mild_where_they_are_always_new(tmp_path):
    rng = np.random.default_rng(0)
    common = [f"city{i}" for i in range(20)]
    towns = [f"town{i}" for i in range(100)]  # each seen twice: rare, but values of this field recur
    cities = [*rng.choice(common, 1_800).tolist(), *np.repeat(towns, 2).tolist()]
    rng.shuffle(cities)
    # The reference is new on every line, as an order id is.
    lines = [f"ORD {c} {rng.choice(['open', 'paid', 'sent'])} r{i:05d}" for i, c in enumerate(cities)]
    vec, mod, reasons = settings_for("auto", lines, epochs=40)
    assert vec.rare and mod.hide_novelty and any(r.startswith("novelty: ") for r in reasons)
    bundle = train_bundle(lines, tmp_path / "b", vec, mod, verbose=0, log=lambda _: None)
    typical = bundle.errors([f"ORD {c} paid r9{i:04d}" for i, c in enumerate(common)])
    known_town = bundle.errors([f"ORD {t} paid r9{i:04d}" for i, t in enumerate(towns[:20])])
    new_city = bundle.errors([f"ORD village{i} paid r9{i:04d}" for i in range(20)])
    new_status = bundle.errors([f"ORD {c} lost r9{i:04d}" for i, c in enumerate(common)])
    known_reference = bundle.errors([f"ORD {c} paid r{i:05d}" for i, c in enumerate(common)])
    # A new reference is what every line brings, so it costs nothing; one seen before, where references never recur,
    # is itself unusual (a replayed or duplicated id).
    assert np.median(typical) < 0.1 < 10 * np.median(typical) < np.median(known_reference)
    # A town seen before is mild; a city never seen, where cities recur, is loud; a new status louder still.
    assert np.median(known_town) < np.median(new_city)
    assert np.median(typical) * 10 < np.median(new_city)
    assert np.median(typical) * 10 < np.median(new_status)
