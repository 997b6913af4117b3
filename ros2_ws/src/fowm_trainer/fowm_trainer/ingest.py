"""Bag ingestion: directories of episode bags -> verified, deduplicated fowm_core Episodes.

Each bag is read with `read_episode_bag` (chunk CRCs and the content digest verified), checked for
the topics an episode needs, and its records are fed in log-time order through the one
`EpisodeAssembler`. A bad bag is skipped with an error naming it and what is wrong (flipped bits,
truncation, garbage, a missing topic, an episode that cannot be assembled) while the others load.

Identity: a bag is its content digest (sha256 over every message), not its path. `BagIngestor`
remembers the digests it has ingested (the trainer stores them in its checkpoint), so a bag that is
copied, renamed or scanned again is never ingested twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fowm_core.buffer import Episode
from fowm_core.specs import ObservationSpec
from fowm_trainer.assembler import AssemblerConfig, AssemblyError, EpisodeAssembler
from fowm_xarm.episode_bag import (
    INTEGRITY_KEY,
    EpisodeBagError,
    list_episode_bags,
    load_bag_info,
    read_episode_bag,
)
from fowm_xarm.kinematics import XArm7Kinematics
from fowm_xarm.observation import STATE_DIM, ObservationConfig

ACTION_DIM = 4  # TCP xyz delta + gripper


def observation_spec(config: ObservationConfig) -> ObservationSpec:
    """The model's observation spec for observations made with `config`."""
    return ObservationSpec.make(rgb=(3, config.image_size, config.image_size), state_dim=STATE_DIM)


def stored_digest(bag: Path) -> str | None:
    """The content digest a bag's metadata claims (cheap: metadata.yaml only), or None. Only a hint
    for skipping known bags; `read_episode_bag` verifies it."""
    try:
        info = load_bag_info(bag)
        return json.loads((info.get("custom_data") or {})[INTEGRITY_KEY])["content_sha256"]
    except Exception:  # unreadable metadata: the full read reports it properly
        return None


@dataclass
class IngestedBag:
    """The episodes of one bag."""

    path: Path
    identity: str  # content sha256 of the bag
    episodes: list[Episode]
    problems: list[str] = field(default_factory=list)  # other episodes in the bag that were unusable


@dataclass
class IngestReport:
    """What one scan of a directory gave."""

    bags: list[IngestedBag] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # bag path -> why it was skipped
    duplicates: list[str] = field(default_factory=list)  # bag paths already ingested (same content)

    @property
    def episodes(self) -> list[Episode]:
        return [e for b in self.bags for e in b.episodes]

    @property
    def transitions(self) -> int:
        return sum(len(e) for e in self.episodes)


class BagIngestor:
    """Turns bags into Episodes, once per bag content."""

    def __init__(
        self,
        observation_config: ObservationConfig | None = None,
        assembler_config: AssemblerConfig | None = None,
        require_checksum: bool = True,
        kinematics: XArm7Kinematics | None = None,
        verify_digest: bool = True,
    ) -> None:
        self.obs_config = observation_config or ObservationConfig()
        self.assembler_config = assembler_config or AssemblerConfig()
        self.require_checksum = require_checksum
        self.verify_digest = verify_digest  # False: chunk CRCs only (faster; see read_episode_bag)
        self.kinematics = kinematics or XArm7Kinematics()
        self.ingested: dict[str, str] = {}  # identity -> path it was first ingested from
        self._failed: dict[str, tuple[float, str]] = {}  # path -> (mtime of metadata.yaml, error)

    def ingest_bag(self, path: str | Path) -> IngestedBag:
        """Read, verify and assemble one bag (does not mark it ingested). Raises EpisodeBagError."""
        path = Path(path)
        bag = read_episode_bag(
            path,
            require_checksum=self.require_checksum,
            decode_arrays=False,
            verify_digest=self.verify_digest,
        )
        present = {topic for topic, _, _ in bag.records}
        missing = [t for t in self.assembler_config.required_topics if t not in present]
        if missing:
            raise EpisodeBagError(
                f"{path}: required topic(s) {', '.join(missing)} missing from the bag "
                f"(it has {sorted(present)})",
                "content",
            )
        assembler = EpisodeAssembler(self.obs_config, self.kinematics, self.assembler_config)
        episodes: list[Episode] = []
        problems: list[str] = []

        def collect(call: Callable[[], list[Episode]]) -> None:
            try:
                episodes.extend(call())
            except AssemblyError as exc:  # that episode is unusable; the stream goes on
                problems.append(str(exc))

        for topic, stamp, msg in bag.records:
            collect(lambda t=topic, s=stamp, m=msg: assembler.feed(t, s, m))
        collect(assembler.flush)
        if not episodes:
            why = problems[0] if problems else "no complete episode (no 'start'/'end' events around actions)"
            raise EpisodeBagError(f"{path}: {why}", "content")
        for e in episodes:
            e.info.update(bag=str(path), bag_sha256=bag.content_sha256)
        return IngestedBag(path, bag.content_sha256, episodes, problems)

    def scan(self, directories: str | Path | Iterable[str | Path]) -> IngestReport:
        """Ingest every finished bag in the directories that was not ingested before (sorted by name
        within each directory). Bags that fail are reported, and retried only once they change."""
        dirs = [directories] if isinstance(directories, str | Path) else list(directories)
        report = IngestReport()
        for directory in dirs:
            try:
                paths = list_episode_bags(directory)
            except EpisodeBagError as exc:
                report.errors[str(directory)] = str(exc)
                continue
            for path in paths:
                key = str(path)
                hint = stored_digest(path)
                if hint is not None and hint in self.ingested:
                    report.duplicates.append(key)
                    continue
                mtime = (path / "metadata.yaml").stat().st_mtime
                if key in self._failed and self._failed[key][0] == mtime:
                    continue  # unchanged since it failed; reported then
                try:
                    bag = self.ingest_bag(path)
                except EpisodeBagError as exc:
                    self._failed[key] = (mtime, str(exc))
                    report.errors[key] = str(exc)
                    continue
                if bag.identity in self.ingested:
                    report.duplicates.append(key)
                    continue
                self.ingested[bag.identity] = key
                report.bags.append(bag)
        return report
