"""The alerting meets its targets on held-out streams (thresholds were chosen on seed 11; this runs seed 12, three
of the four configurations).

See ``alerting_eval.py`` beside this file for the streams and the targets; ``-s`` prints the hour-by-hour table.
"""

import pytest
from alerting_eval import check_targets, configs, evaluate, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("alerting")


@pytest.fixture(scope="module")
def bundle(workdir):
    return train(workdir)


# The 60,000-records configuration (5.8 million records) is left to the script: it alone takes minutes here.
@pytest.mark.parametrize("config", [c for c in configs(12) if c.records_per_hour <= 40_000], ids=lambda c: c.name)
def test_alerting_targets(config, bundle, workdir):
    rows = evaluate(config, bundle, workdir)
    print(f"\n== {config.name}\n{rows.to_string(index=False, float_format=lambda v: f'{v:.1f}')}")
    assert len(rows) == 96 and (rows.decision != "missing").all()
    incidents = rows[rows.label == "incident"]
    assert len(incidents) == 23  # 4 rates x 5 kinds, and the three hours of the long incident
    assert check_targets(rows) == []
    if config.records_per_hour <= 20_000:  # (once or twice is enough to show it, and replays cost time)
        # The checks can fail: the same stream judged with thresholds above every incident's shift misses them.
        strict = evaluate(config, bundle, workdir, overrides=("deviation.page_shift=90", "deviation.ticket_shift=90"))
        assert check_targets(strict)
