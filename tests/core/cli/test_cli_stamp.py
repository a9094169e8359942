"""`metaxy migrations stamp` and `baseline` on real Delta stores: applied without running, visible in history,
undone by rollback with nothing to retract."""

from __future__ import annotations

import json

from cli_testkit import M1, M2, PROJECT, CliProject

from metaxy_core.store.provenance import FEATURE_VERSION

EMB = "video/embeddings"


def rows_at(cli: CliProject, version: int) -> int:
    graph = cli.versions[version].graph
    frame = cli.store.read_metadata(EMB, graph=graph, include_history=True).collect()
    return frame.filter(frame[FEATURE_VERSION] == graph.feature_version(EMB)).height


def test_stamp_marks_applied_without_running_and_history_shows_the_stamp(cli: CliProject) -> None:
    cli.seed().chain()
    code, out, err = cli.run("migrations", "stamp", M1)
    assert code == 0, err
    assert "Stamp (not run)" in out and M1 in out
    assert rows_at(cli, 2) == 0  # nothing ran: no row at the new version
    code, out, _ = cli.run("migrations", "status", "--format", "json")
    [m1, m2] = json.loads(out)
    assert (m1["status"], m1["stamped"], m2["status"]) == ("completed", True, "not_started")
    code, out, _ = cli.run("migrations", "status")
    assert "stamped (not run)" in out
    code, out, _ = cli.run("migrations", "history", M1, "--format", "json")
    assert [e["status"] for e in json.loads(out)] == ["stamped"]
    # the chain goes on from the stamp: M2's parent is applied
    assert cli.run("migrations", "apply", M2)[0] == 0
    assert rows_at(cli, 3) == 0  # M2 carried rows from v2, where nothing was (stamped: done by hand)


def test_stamp_then_rollback_retracts_nothing_and_leaves_the_migration_pending(cli: CliProject) -> None:
    cli.seed().chain()
    assert cli.run("migrations", "stamp", M1)[0] == 0
    code, out, err = cli.run("migrations", "rollback", "--format", "json")
    assert code == 0, err
    [result] = json.loads(out)
    assert result["migration_id"] == M1 and result["status"] == "rolled_back" and result["features"] == []
    assert cli.state(M1) == "not_started"
    code, out, _ = cli.run("migrations", "history", M1, "--format", "json")
    assert [e["status"] for e in json.loads(out)] == ["stamped", "rolled_back"]
    # and it can be applied for real afterwards
    assert cli.run("migrations", "apply", M1)[0] == 0
    assert rows_at(cli, 2) == 20


def test_stamp_refuses_a_migration_whose_parent_is_not_applied(cli: CliProject) -> None:
    cli.seed().chain()
    code, _, err = cli.run("migrations", "stamp", M2)
    assert code == 1
    assert f"FAILED: cannot stamp {M2}: it follows {M1}, which is not applied" in err
    assert f"`metaxy migrations baseline {M2}`" in err
    assert cli.state(M2) == "not_started"


def test_stamping_an_applied_migration_changes_nothing(cli: CliProject) -> None:
    cli.seed().chain()
    assert cli.run("migrations", "apply", M1)[0] == 0
    code, out, _ = cli.run("migrations", "stamp", M1, "--format", "json")
    assert code == 0
    assert json.loads(out) == [
        {"migration_id": M1, "status": "already_applied", "previous_status": "completed"}
    ]
    code, out, _ = cli.run("migrations", "history", M1, "--format", "json")
    assert "stamped" not in [e["status"] for e in json.loads(out)]


def test_baseline_adopts_a_store_with_data_and_no_log(cli: CliProject) -> None:
    cli.seed().chain()  # 20 samples written by a pipeline; migrations never ran here
    code, out, err = cli.run("migrations", "baseline", "--format", "json")
    assert code == 0, err
    assert [(r["migration_id"], r["status"]) for r in json.loads(out)] == [(M1, "stamped"), (M2, "stamped")]
    assert cli.run("migrations", "check")[0] == 0
    code, out, _ = cli.run("migrations", "apply")
    assert code == 0 and "nothing to apply" in out
    assert rows_at(cli, 1) == 20 and rows_at(cli, 2) == rows_at(cli, 3) == 0  # the data was not touched
    # a second baseline would hide what the log says: refused, pointing at stamp
    code, _, err = cli.run("migrations", "baseline")
    assert code == 1
    assert f"already has a migration log for project {PROJECT}" in err
    assert "use `metaxy migrations stamp ID`" in err


def test_baseline_up_to_a_migration_leaves_the_rest_pending(cli: CliProject) -> None:
    cli.seed().chain()
    code, out, _ = cli.run("migrations", "baseline", M1)
    assert code == 0 and "Baseline (stamped, not run)" in out
    assert cli.state(M1) == "completed" and cli.state(M2) == "not_started"
    code, out, _ = cli.run("migrations", "check")
    assert code == 1 and out.splitlines() == [f"{M2}: pending: not applied; run `metaxy migrations apply`"]
