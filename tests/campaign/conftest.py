"""Seeds and servers for the fault campaign (tests/campaign).

Which seeds run, first match wins:
    --campaign-seed S[,S...]     pytest option (scripts/test --campaign-seed S)
    CAMPAIGN_SEEDS=S[,S...]      the same from the environment (CAMPAIGN_SEED too)
    CAMPAIGN_RANDOM=N            N fresh random seeds (scripts/test --campaign N)
    otherwise FIXED_SEEDS, the ones .ci/run and scripts/test run.
Every seed is printed in the session header and in each test's id, and a
failure names the command that replays it.

CAMPAIGN_STRICT=1 turns the per-invariant xfail marks of known open
defects (twcampaign.KNOWN_DEFECTS) off, so that the invariants fail
outright. CAMPAIGN_SECONDS sets how long pushes and faults go on (34 s;
the rows and faults scale with it). TASKWORKERD_BIN and TASKWORKERCTL_BIN
name the binaries, as for tests/integration.

A seed's daemon logs, its event log (every fault with its wall-clock time,
to read beside the daemons' logs) and its handler runs are kept in
/tmp/twcampaign-SEED-* when an invariant fails.
"""

import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import twcampaign  # noqa: E402

FIXED_SEEDS = [1, 2, 3, 5]


def pytest_addoption(parser):
    parser.addoption("--campaign-seed", action="append", default=[],
                     help="run the fault campaign with this seed (repeatable, or S1,S2)")


def _parse(text):
    return [int(s) for s in text.replace(",", " ").split()]


def campaign_seeds(config):
    opt = config.getoption("--campaign-seed", default=None)
    if opt:
        return [s for o in opt for s in _parse(o)]
    env = os.environ.get("CAMPAIGN_SEEDS") or os.environ.get("CAMPAIGN_SEED")
    if env:
        return _parse(env)
    n = os.environ.get("CAMPAIGN_RANDOM")
    if n:
        rng = random.SystemRandom()
        return [rng.randrange(1, 2**31) for _ in range(int(n))]
    return list(FIXED_SEEDS)


def pytest_configure(config):
    config._campaign_seeds = campaign_seeds(config)


def _seeds_line(config):
    seeds = " ".join(map(str, config._campaign_seeds))
    return f"campaign seeds: {seeds} (replay one: scripts/test --campaign-seed SEED)"


def pytest_sessionstart(session):
    # Written even under -q, unlike a report header.
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(_seeds_line(session.config))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if twcampaign.SUMMARIES:
        terminalreporter.section("fault campaign")
        for line in twcampaign.SUMMARIES:
            terminalreporter.write_line(line)


def pytest_generate_tests(metafunc):
    if "seed" in metafunc.fixturenames:
        seeds = metafunc.config._campaign_seeds
        metafunc.parametrize("seed", seeds, ids=[f"seed={s}" for s in seeds], scope="module")


@pytest.fixture(scope="session")
def campaign_servers():
    s = twcampaign.Servers()
    try:
        s.start()
        yield s
    finally:
        s.cleanup()
