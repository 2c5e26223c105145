"""Issue 13: opmas up gives the findings and ids of opmas detect over one log from several agents, its
SSH brute forces spread over the agents (hence over partitions); the scale-out workers are held to the
same log in tests/integration/scaleout/test_workers.py."""
from __future__ import annotations

import nats
import pytest

from opmas.connectors.nats.subjects import ensure_streams
from tests.expected import BRUTE_FORCE_SUCCEEDED, event_log, offline_findings
from tests.integration.pipeline.conftest import finding_ids_in_postgres, running
from tests.waiting import wait_until


@pytest.mark.parametrize("workers", [0, 2])  # evaluating in the engine process, and in two evaluator processes
async def test_opmas_up_finds_what_opmas_detect_finds(config, archive, workers):
    config = config.with_overrides(pipeline={"partitions": 4, "workers": workers})
    messages = event_log(3000, seed=11)
    expected = offline_findings(messages)
    assert list(expected.values()).count(BRUTE_FORCE_SUCCEEDED) == 12
    nc = await nats.connect(config.nats.url)
    js = nc.jetstream()
    await ensure_streams(js)
    async with running(config, archive):
        for subject, data in messages:
            await js.publish(subject, data)

        async def all_stored() -> bool:
            return len(await finding_ids_in_postgres(config.postgres.url)) >= len(expected)
        await wait_until(all_stored, 90, "every finding in PostgreSQL")
    await nc.close()
    assert set(await finding_ids_in_postgres(config.postgres.url)) == set(expected)
