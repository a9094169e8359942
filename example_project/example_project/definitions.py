"""Dagster definitions of the example: every migration an asset (its operations its ops), every feature table
an asset, the apply and plan jobs, checks, a schedule and the sensors.

They come from the component in ``example_project/defs/migrations/defs.yaml``: ``dg dev`` / ``dg list defs``
(the ``[tool.dg]`` project in ``pyproject.toml``) and ``dagster dev`` (``[tool.dagster]`` names this module)
load the same :data:`defs`. ``python -m example_project.dev`` starts the local S3 and PostgreSQL servers,
seeds them and the store, and opens the UI with everything in place. Loading reads files only: no store, no
S3, no database.
"""

from __future__ import annotations

from pathlib import Path

from dagster import Definitions, definitions, load_from_defs_folder

import example_project.features  # noqa: F401  (registers the code's feature graph before the chain loads)
from example_project import CONFIG_FILE
from metaxy_core import MetaxyConfig
from metaxy_dagster import MetaxyMigrationsComponent

#: the component declaring the example's migrations (the one place its Dagster settings live)
COMPONENT_YAML = Path(__file__).resolve().parent / "defs" / "migrations" / "defs.yaml"


@definitions
def defs() -> Definitions:
    """What ``dg`` and ``dagster dev`` load: every component under ``example_project/defs/``."""
    return load_from_defs_folder(path_within_project=Path(__file__).resolve().parent)


def build_definitions(config: MetaxyConfig | None = None) -> Definitions:
    """The component's definitions for ``config`` (default: ``metaxy.toml`` plus ``METAXY_*`` overrides), e.g.
    with the store somewhere else (the run script and the tests)."""
    component = MetaxyMigrationsComponent.from_defs_yaml(COMPONENT_YAML)
    return component.build_definitions(config or MetaxyConfig.load(CONFIG_FILE))
