"""Dagster Components for metaxy."""

from metaxy_dagster.components.migrations import MetaxyMigrationsComponent as MetaxyMigrationsComponent
