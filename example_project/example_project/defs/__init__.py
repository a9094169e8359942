"""The example's Dagster definitions as components (``dg list defs``): one metaxy migrations component."""
