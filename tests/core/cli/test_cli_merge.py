"""Two branches that each added a migration: `heads` lists them, `generate --merge` joins them, `apply` runs
the merged chain end to end on a real Delta store."""

from __future__ import annotations

import json

from cli_testkit import M1, M2, CliProject

from metaxy_core.migrations import load_chain

BRANCH = "20250102_120000_compact_embeddings"
MAINTAIN = {"type": "metaxy_core.migrations.ops.DeltaMaintenance", "feature_key": "video/embeddings"}


def forked(cli: CliProject) -> CliProject:
    """M1, then M2 (reconcile v2 -> v3) on one branch and a compaction of the embeddings on the other."""
    cli.seed().chain()
    cli.migration(BRANCH, M1, 2, ops=[MAINTAIN], kind="full_graph", from_snapshot=None, to_snapshot=None)
    return cli


def test_a_forked_chain_fails_naming_the_heads_and_the_merge_command(cli: CliProject) -> None:
    forked(cli)
    code, _, err = cli.run("migrations", "status")
    assert code == 1
    assert (
        f"the chain forks: {cli.migrations_dir / f'{M2}.yaml'}, {cli.migrations_dir / f'{BRANCH}.yaml'}"
        in err
    )
    assert f"all have parent {M1}" in err and "run `metaxy migrations generate --merge`" in err


def test_heads_lists_both_branches_and_where_they_split(cli: CliProject) -> None:
    forked(cli)
    code, out, _ = cli.run("migrations", "heads", "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert [h["migration_id"] for h in report["heads"]] == [M2, BRANCH]
    assert report["branch_point"] == M1
    code, out, _ = cli.run("migrations", "heads")
    assert code == 0 and f"the chain forks after {M1}" in out and "generate --merge" in out


def test_merge_joins_the_heads_and_the_chain_applies_end_to_end(cli: CliProject) -> None:
    forked(cli)
    code, out, err = cli.run("migrations", "generate", "--merge", "--name", "join", "--format", "json")
    assert code == 0, err
    generated = json.loads(out)
    merge = generated["migration_id"]
    assert merge.endswith("_join") and generated["merged"] == [M2, BRANCH]
    [merge_migration] = [m for m in load_chain(cli.migrations_dir) if m.migration_id == merge]
    assert merge_migration.parents == (M2, BRANCH)

    code, out, _ = cli.run("migrations", "heads", "--format", "json")
    assert [h["migration_id"] for h in json.loads(out)["heads"]] == [merge]
    code, out, _ = cli.run("migrations", "list")
    assert f"merge of {M2}, {BRANCH}" in out

    code, out, err = cli.run("migrations", "apply", "--format", "json")
    assert code == 0, err
    applied = [r["migration_id"] for r in json.loads(out)]
    assert applied[0] == M1 and applied[-1] == merge and set(applied) == {M1, M2, BRANCH, merge}
    code, out, _ = cli.run("migrations", "status", "--format", "json")
    assert {r["migration_id"]: r["status"] for r in json.loads(out)} == dict.fromkeys(applied, "completed")
    assert cli.run("migrations", "check")[0] == 0
    assert cli.run("migrations", "verify")[0] == 0


def test_merge_on_a_chain_with_one_head_says_there_is_nothing_to_merge(cli: CliProject) -> None:
    cli.seed().chain()
    code, _, err = cli.run("migrations", "generate", "--merge")
    assert code == 1 and f"FAILED: the chain has one head ({M2}); there is nothing to merge" in err


def test_rolling_back_one_branch_leaves_the_other_applied(cli: CliProject) -> None:
    forked(cli)
    assert cli.run("migrations", "generate", "--merge")[0] == 0
    assert cli.run("migrations", "apply")[0] == 0
    code, out, err = cli.run("migrations", "rollback", M2, "--yes", "--format", "json")
    assert code == 0, err
    rolled = [r["migration_id"] for r in json.loads(out)]
    assert len(rolled) == 2 and rolled[1] == M2  # the merge (newest) first, then M2; not the other branch
    assert cli.state(BRANCH) == "completed" and cli.state(M1) == "completed"
