"""Pipelines and their stages as configuration data: load from TOML or YAML, store, read back.

A pipeline file lists pipelines and, in order, their stages::

    [[pipeline]]
    name = "new-business"
    default = true          # the pipeline reports use without --pipeline
    currency = "USD"        # reporting currency unless --currency says otherwise

    [[pipeline.stage]]
    name = "Qualify"
    probability = 0.1       # 0..1, weights the pipeline amount
    stall_days = 14         # report stalled: no stage change for this many days

    [[pipeline.stage]]
    name = "Closed won"
    probability = 1.0
    won = true

Stage order is the file order. ``set_pipelines`` upserts by name: stages keep their ids (deals point
at them); a stage missing from the file is deleted when no deal or history row uses it, else the
file is refused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, select

from crmctl import configfile
from crmctl.db.engine import tenant_of
from crmctl.db.models import Pipeline, Stage
from crmctl.errors import ConfigError, InputError, NotFoundError


@dataclass(frozen=True)
class StageSpec:
    name: str
    probability: float
    is_won: bool = False
    is_lost: bool = False
    stall_days: int | None = None

    @property
    def is_open(self) -> bool:
        return not (self.is_won or self.is_lost)


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    stages: tuple[StageSpec, ...]
    is_default: bool = False
    currency: str = "USD"


@dataclass(frozen=True)
class StageInfo:
    """A stored stage, as reports use it."""

    id: int
    name: str
    position: int
    probability: float
    is_won: bool
    is_lost: bool
    stall_days: int | None

    @property
    def is_open(self) -> bool:
        return not (self.is_won or self.is_lost)


@dataclass(frozen=True)
class PipelineInfo:
    id: int
    name: str
    is_default: bool
    currency: str
    stages: tuple[StageInfo, ...] = field(default=())

    def open_stages(self) -> tuple[StageInfo, ...]:
        return tuple(s for s in self.stages if s.is_open)


# -- parsing -----------------------------------------------------------------------------------


def parse_pipeline_file(path: Path) -> list[PipelineSpec]:
    """Read and validate a TOML or YAML (``.yaml``/``.yml``) pipeline file; every problem is listed
    in one error."""
    body = configfile.read(path, "pipeline file")
    raw = configfile.parse(body, yaml_syntax=configfile.is_yaml(path), what="pipeline file", source=str(path))
    return parse_pipelines(raw, source=str(path))


def parse_pipelines(raw: dict[str, Any], *, source: str = "the pipeline file") -> list[PipelineSpec]:
    problems: list[str] = []
    entries = raw.get("pipeline")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source} defines no [[pipeline]] table.")
    specs: list[PipelineSpec] = []
    for p_index, entry in enumerate(entries, start=1):
        where = f"pipeline {p_index}"
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{where}: 'name' must be a non-empty string")
            continue
        where = f"pipeline '{name}'"
        currency = entry.get("currency", "USD")
        if not (isinstance(currency, str) and len(currency) == 3 and currency.isalpha()):
            problems.append(f"{where}: 'currency' must be a 3-letter ISO code")
            currency = "USD"
        stages: list[StageSpec] = []
        seen: set[str] = set()
        for s_index, stage in enumerate(entry.get("stage") or [], start=1):
            swhere = f"{where} stage {s_index}"
            sname = stage.get("name")
            if not isinstance(sname, str) or not sname.strip():
                problems.append(f"{swhere}: 'name' must be a non-empty string")
                continue
            if sname in seen:
                problems.append(f"{swhere}: duplicate stage name '{sname}'")
            seen.add(sname)
            prob = stage.get("probability")
            if not isinstance(prob, int | float) or isinstance(prob, bool) or not 0 <= prob <= 1:
                problems.append(f"{swhere}: 'probability' must be a number from 0 to 1")
                prob = 0.0
            won, lost = bool(stage.get("won", False)), bool(stage.get("lost", False))
            if won and lost:
                problems.append(f"{swhere}: a stage cannot be both won and lost")
            stall = stage.get("stall_days")
            if stall is not None and (not isinstance(stall, int) or isinstance(stall, bool) or stall < 1):
                problems.append(f"{swhere}: 'stall_days' must be a positive whole number")
                stall = None
            stages.append(StageSpec(sname, float(prob), won, lost, stall))
        if not stages:
            problems.append(f"{where}: at least one [[pipeline.stage]] is needed")
        elif not any(s.is_open for s in stages):
            problems.append(f"{where}: at least one stage must be open (neither won nor lost)")
        specs.append(PipelineSpec(name, tuple(stages), bool(entry.get("default", False)), currency.upper()))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        problems.append("pipeline names must be unique")
    if sum(s.is_default for s in specs) > 1:
        problems.append("at most one pipeline can be the default")
    if problems:
        raise ConfigError(f"{source} has {len(problems)} problem(s): " + "; ".join(problems) + ".")
    return specs


# -- storing -----------------------------------------------------------------------------------


@dataclass
class SetResult:
    pipelines_created: int = 0
    pipelines_updated: int = 0
    stages_created: int = 0
    stages_updated: int = 0
    stages_deleted: int = 0


def set_pipelines(session: Session, specs: list[PipelineSpec]) -> SetResult:
    """Create or update the pipelines in ``specs`` (by name) and their stages (by name)."""
    tenant = tenant_of(session)
    result = SetResult()
    if any(s.is_default for s in specs):
        for other in session.exec(select(Pipeline).where(Pipeline.tenant_id == tenant)).all():
            if other.name not in {s.name for s in specs if s.is_default} and other.is_default:
                other.is_default = False
                session.add(other)
    for spec in specs:
        pipeline = session.exec(
            select(Pipeline).where(Pipeline.tenant_id == tenant, Pipeline.name == spec.name)
        ).first()
        if pipeline is None:
            pipeline = Pipeline(tenant_id=tenant, name=spec.name)
            result.pipelines_created += 1
        else:
            result.pipelines_updated += 1
        pipeline.currency = spec.currency
        pipeline.is_default = spec.is_default or (pipeline.is_default and pipeline.id is not None)
        session.add(pipeline)
        session.flush()
        existing = {
            s.name: s
            for s in session.exec(
                select(Stage).where(Stage.tenant_id == tenant, Stage.pipeline_id == pipeline.id)
            ).all()
        }
        wanted = {s.name for s in spec.stages}
        for gone_name, gone in existing.items():
            if gone_name in wanted:
                continue
            if _stage_in_use(session, tenant, gone.id):
                raise InputError(
                    f"Stage '{gone_name}' of pipeline '{spec.name}' is used by deals or their history "
                    "and cannot be removed.",
                    hint="Keep it in the file (its order and probability can change).",
                )
            session.delete(gone)
            result.stages_deleted += 1
        session.flush()
        for position, stage_spec in enumerate(spec.stages, start=1):
            stage = existing.get(stage_spec.name)
            if stage is None:
                stage = Stage(tenant_id=tenant, pipeline_id=pipeline.id, name=stage_spec.name, position=0)
                result.stages_created += 1
            else:
                result.stages_updated += 1
            stage.position = position
            stage.probability = stage_spec.probability
            stage.is_won = stage_spec.is_won
            stage.is_lost = stage_spec.is_lost
            stage.stall_days = stage_spec.stall_days
            session.add(stage)
        session.flush()
    if not session.exec(select(Pipeline).where(Pipeline.tenant_id == tenant, Pipeline.is_default)).first():
        first = session.exec(
            select(Pipeline).where(Pipeline.tenant_id == tenant).order_by(Pipeline.id)
        ).first()
        if first is not None:
            first.is_default = True
            session.add(first)
    return result


def _stage_in_use(session: Session, tenant: str, stage_id: int | None) -> bool:
    row = session.execute(
        text(
            "SELECT 1 FROM deal WHERE tenant_id = :t AND stage_id = :s "
            "UNION ALL SELECT 1 FROM stage_change WHERE tenant_id = :t AND (to_stage_id = :s "
            "OR from_stage_id = :s) LIMIT 1"
        ),
        {"t": tenant, "s": stage_id},
    ).first()
    return row is not None


# -- reading -----------------------------------------------------------------------------------


def list_pipelines(session: Session) -> list[PipelineInfo]:
    tenant = tenant_of(session)
    pipelines = session.exec(
        select(Pipeline).where(Pipeline.tenant_id == tenant).order_by(Pipeline.name)
    ).all()
    stages = session.exec(
        select(Stage).where(Stage.tenant_id == tenant).order_by(Stage.pipeline_id, Stage.position)
    ).all()
    by_pipeline: dict[int, list[StageInfo]] = {}
    for s in stages:
        assert s.id is not None
        by_pipeline.setdefault(s.pipeline_id, []).append(
            StageInfo(s.id, s.name, s.position, s.probability, s.is_won, s.is_lost, s.stall_days)
        )
    return [
        PipelineInfo(p.id, p.name, p.is_default, p.currency, tuple(by_pipeline.get(p.id, [])))
        for p in pipelines
        if p.id is not None
    ]


def resolve_pipelines(session: Session, name: str | None) -> list[PipelineInfo]:
    """The pipelines a report covers: the named one, or all of the tenant's.

    Raises a one-sentence error when the tenant has none or the name is unknown."""
    pipelines = list_pipelines(session)
    if not pipelines:
        raise NotFoundError(
            "This tenant has no pipeline configured yet.",
            hint="Load one with 'crmctl pipeline set pipelines.toml'.",
        )
    if name is None:
        return pipelines
    chosen = [p for p in pipelines if p.name == name]
    if not chosen:
        known = ", ".join(p.name for p in pipelines)
        raise NotFoundError(f"There is no pipeline named '{name}'.", hint=f"Known pipelines: {known}.")
    return chosen


def default_currency(pipelines: list[PipelineInfo]) -> str:
    for p in pipelines:
        if p.is_default:
            return p.currency
    return pipelines[0].currency


def stage_rows(pipelines: list[PipelineInfo]) -> list[dict[str, Any]]:
    """One row per stage, for ``pipeline show``."""
    rows = []
    for p in pipelines:
        for s in p.stages:
            row = {"pipeline": p.name, "default": p.is_default, "currency": p.currency}
            row |= {k: v for k, v in asdict(s).items() if k != "id"}
            rows.append(row)
    return rows
