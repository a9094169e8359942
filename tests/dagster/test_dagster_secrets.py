"""Secrets in storage options never reach Dagster: not in run config, metadata, events or logs."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import boto3
import dagster as dg
from metaxy_dg_testkit import EMB, RECONCILE, make_project

from metaxy_dagster import APPLY_JOB_NAME, MetaxyStoreResource, build_migration_definitions

M1 = "20250101_000000_emb_v1_to_v2"
SECRET = "mxdg-Secret-Value-7f3a9c"
KEY_ID = "mxdg-key-id-5521"


def everything_dagster_recorded(instance: dg.DagsterInstance, run_id: str) -> str:
    """Every event of the run (messages, metadata, failures), its run config and tags, as text."""
    parts = [repr(instance.get_run_by_id(run_id).run_config), repr(instance.get_run_by_id(run_id).tags)]
    for entry in instance.all_logs(run_id):
        parts.append(entry.user_message or "")
        parts.append(repr(entry.dagster_event))
    return "\n".join(parts)


def test_leaked_secret_in_an_operation_error_is_redacted(
    tmp_path: Path, monkeypatch, instance, caplog
) -> None:
    monkeypatch.setenv("MXDG_SECRET", SECRET)
    project = make_project(tmp_path, migrations=((1, 2),))
    project.write_migration(
        M1,
        parent="initial",
        from_version=1,
        to_version=2,
        ops=[RECONCILE, {"type": "metaxy_dg_testkit.LeakyOperation"}],
    )
    store = MetaxyStoreResource(
        config_path=str(project.config_path),
        storage_options={"AWS_SECRET_ACCESS_KEY": dg.EnvVar("MXDG_SECRET")},
    )
    defs = build_migration_definitions(config_path=project.config_path, store=store)
    with caplog.at_level(logging.DEBUG), project.active():
        result = defs.resolve_job_def(APPLY_JOB_NAME).execute_in_process(
            instance=instance, raise_on_error=False
        )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    assert "cannot reach the bucket with options" in failure.user_failure_data.description
    assert "'AWS_SECRET_ACCESS_KEY': '***'" in failure.user_failure_data.description
    recorded = everything_dagster_recorded(instance, result.run_id)
    assert "cannot reach the bucket" in recorded
    assert SECRET not in recorded
    assert SECRET not in caplog.text
    assert SECRET not in repr(defs.resources["metaxy_store"])
    assert "MXDG_SECRET" in repr(defs.resources["metaxy_store"].storage_options)  # only the variable's name


def test_s3_store_with_envvar_credentials(
    tmp_path: Path, monkeypatch, moto_endpoint: str, instance, caplog
) -> None:
    bucket = f"mxdg-{uuid.uuid4().hex[:10]}"
    boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    monkeypatch.setenv("MXDG_S3_KEY_ID", KEY_ID)
    monkeypatch.setenv("MXDG_S3_SECRET", SECRET)
    project = make_project(
        tmp_path,
        migrations=((1, 2),),
        store_root=f"s3://{bucket}/metadata",
        storage_options={
            "AWS_ENDPOINT_URL": moto_endpoint,
            "AWS_ACCESS_KEY_ID": "${MXDG_S3_KEY_ID}",
            "AWS_SECRET_ACCESS_KEY": "${MXDG_S3_SECRET}",
            "AWS_REGION": "us-east-1",
        },
    )
    # The code location passes credentials as EnvVar: Dagster only ever sees the variables' names.
    store = MetaxyStoreResource(
        root_uri=f"s3://{bucket}/metadata",
        project="demo",
        entrypoints=[project.module],
        migrations_dir=str(project.migrations_dir),
        storage_options={
            "AWS_ENDPOINT_URL": moto_endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": dg.EnvVar("MXDG_S3_KEY_ID"),
            "AWS_SECRET_ACCESS_KEY": dg.EnvVar("MXDG_S3_SECRET"),
        },
    )
    defs = build_migration_definitions(config_path=project.config_path, store=store)
    with caplog.at_level(logging.DEBUG), project.active():
        result = defs.resolve_job_def(APPLY_JOB_NAME).execute_in_process(instance=instance)
    assert result.success
    assert project.rows_at(EMB, 2) == 5  # written to the bucket
    assert all(c.passed for c in result.get_asset_check_evaluations())
    recorded = everything_dagster_recorded(instance, result.run_id)
    for secret in (SECRET, KEY_ID):
        assert secret not in recorded
        assert secret not in caplog.text


def test_missing_bucket_fails_with_a_clear_message_and_no_secret(
    tmp_path, monkeypatch, moto_endpoint, instance
) -> None:
    project = make_project(tmp_path, migrations=((1, 2),))
    monkeypatch.setenv("MXDG_S3_SECRET", SECRET)
    store = MetaxyStoreResource(
        config_path=str(project.config_path),
        root_uri="s3://mxdg-no-such-bucket/metadata",
        storage_options={
            "AWS_ENDPOINT_URL": moto_endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": dg.EnvVar("MXDG_S3_SECRET"),
        },
    )
    defs = build_migration_definitions(config_path=project.config_path, store=store)
    with project.active():
        result = defs.resolve_job_def(APPLY_JOB_NAME).execute_in_process(
            instance=instance, raise_on_error=False
        )
    assert not result.success
    description = result.get_step_failure_events()[0].step_failure_data.user_failure_data.description
    assert "s3://mxdg-no-such-bucket/metadata" in description
    assert SECRET not in everything_dagster_recorded(instance, result.run_id)
