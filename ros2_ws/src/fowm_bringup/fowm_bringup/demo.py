"""`make demo`: the main job in the MuJoCo sim.

Not built yet: the offline-to-online demo needs fowm_core (the FOWM algorithm) and fowm_sim
(the xArm MuJoCo tasks), which are being built. Until then this says what it will run and exits
with an error instead of printing anything that looks like a result.
"""

from __future__ import annotations

import sys

PLAN = """\
make demo will run, in the MuJoCo xArm simulation, for the reach and push tasks:
  1. collect scripted "medium" demonstrations with rendered camera images;
  2. pretrain the FOWM world model offline on them;
  3. evaluate (success rate on held-out seeds);
  4. finetune online by planning with the uncertainty-regularised MPPI, with balanced
     offline/online batches;
  5. evaluate again, and write a learning-curve PNG and a video of an evaluation episode.

It is not built yet (issue: "A first main job"), so nothing was run.
"""


def main() -> int:
    print(PLAN, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
