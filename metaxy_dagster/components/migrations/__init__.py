from metaxy_dagster.components.migrations.component import (
    MetaxyMigrationsComponent as MetaxyMigrationsComponent,
)
