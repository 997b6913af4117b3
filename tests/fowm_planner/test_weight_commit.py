"""The planner's weight commit logic without ROS: versions only rise, the signature binds the
version, and re-committing what is loaded is a no-op, so no recorded update can roll a robot back."""

from __future__ import annotations

import numpy as np
import torch

from fowm_core.weights import generate_key_file, load_key_file, sign_weights, weights_sha256, weights_to_bytes
from fowm_planner.model import build_agent
from fowm_planner.weight_commit import WeightCommitter


def test_versions_only_rise_and_a_replay_cannot_roll_back(tmp_path):
    key = load_key_file(generate_key_file(tmp_path / "key"))
    agent = build_agent("realtime-cpu", ("state",), 84)[0]
    old = weights_to_bytes(agent)
    with torch.no_grad():
        for p in agent.model.parameters():
            p.add_(0.01)
    new = weights_to_bytes(agent)
    committer = WeightCommitter(agent, key)
    for blob in (old, new):
        committer.receive(blob)

    def commit(version, blob, signed_as=None):
        return committer.commit(version, weights_sha256(blob), sign_weights(blob, key, signed_as or version))

    assert commit(1, old).accepted
    assert commit(2, new).accepted
    loaded = {k: v.clone() for k, v in agent.get_weights().items()}
    assert commit(2, new).accepted  # the trainer re-pushing what is loaded: no-op

    rollback = commit(1, old)  # a correctly signed, older update replayed
    assert not rollback.accepted and "not newer than the loaded version 2" in rollback.reason
    replay = commit(3, old, signed_as=1)  # its signature under a higher version
    assert not replay.accepted and "not signed as version 3" in replay.reason
    same_version_other_blob = commit(2, old)
    assert not same_version_other_blob.accepted and "not newer" in same_version_other_blob.reason

    now = agent.get_weights()
    assert all(np.array_equal(now[k].numpy(), loaded[k].numpy()) for k in loaded)  # still version 2
    assert committer.version == 2 and committer.rejected == 3
