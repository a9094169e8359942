"""The migration chain: pure validation of in-memory Migration objects (no I/O)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from metaxy_core.migrations import DiffMigration, MigrationChain
from metaxy_core.migrations.chain import (
    ChainError,
    DuplicateMigrationError,
    ForkError,
    MigrationCycleError,
    MissingParentError,
    MultipleRootsError,
    NoRootError,
    UnknownMigrationError,
)

A, B, C, D, E, F = (f"20250101_00000{i}_{n}" for i, n in enumerate("abcdef", start=1))


def mig(migration_id: str, parent: str | list[str] = "initial", *, file: str | None = None) -> DiffMigration:
    m = DiffMigration(
        migration_id=migration_id,
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
        parent=parent,
        from_snapshot_version="aaaa",
        to_snapshot_version="bbbb",
    )
    m._source_path = Path(file or f"migrations/{migration_id}.yaml")
    return m


def test_chain_orders_migrations_by_parent_links_not_by_input_order_or_id():
    # ids sort a < b < c < d, but the parents say a -> c -> b -> d
    items = [mig(A), mig(C, A), mig(B, C), mig(D, B)]
    random.Random(3).shuffle(items)
    chain = MigrationChain(items)
    assert chain.ids == [A, C, B, D]
    assert chain.head.migration_id == D
    assert [m.migration_id for m in chain.upto(B)] == [A, C, B]
    assert [m.migration_id for m in chain.descendants(C)] == [B, D]
    assert chain.parents_of(A) == [] and [m.migration_id for m in chain.parents_of(B)] == [C]
    assert len(chain) == 4 and C in chain and "nope" not in chain


def test_empty_chain_is_valid_and_has_no_head():
    chain = MigrationChain([])
    assert len(chain) == 0 and chain.ids == [] and chain.head is None and chain.upto(None) == []


def test_unknown_migration_id_names_the_known_ones():
    chain = MigrationChain([mig(A)])
    with pytest.raises(UnknownMigrationError, match=rf"migration nope not found \(known: {A}\)"):
        chain.get("nope")


def test_duplicate_ids_name_both_files():
    with pytest.raises(DuplicateMigrationError) as info:
        MigrationChain([mig(A, file="m/one.yaml"), mig(A, file="m/two.py")])
    message = str(info.value)
    assert f"migration id {A} is defined more than once (m/one.yaml, m/two.py)" in message
    assert "rename one file" in message


def test_missing_parent_names_the_file_the_parent_and_the_fix():
    with pytest.raises(MissingParentError) as info:
        MigrationChain([mig(A), mig(B, "20240101_000000_gone")])
    message = str(info.value)
    assert message.startswith(f"migrations/{B}.yaml: parent 20240101_000000_gone does not exist")
    assert f"(known migrations: {A}, {B})" in message
    assert "point `parent` at an existing migration" in message


def test_fork_with_several_heads_names_both_children():
    with pytest.raises(ForkError) as info:
        MigrationChain([mig(A), mig(B, A), mig(C, A)])
    assert info.value.heads == [B, C]
    message = str(info.value)
    assert f"the chain forks: migrations/{B}.yaml, migrations/{C}.yaml all have parent {A}" in message
    assert f"set the parent of the later one to {B}" in message
    assert "run `metaxy migrations generate --merge`" in message


def test_heads_of_branches_of_different_lengths_name_the_branch_point_and_the_merge_command():
    with pytest.raises(ForkError) as info:
        MigrationChain([mig(A), mig(B, A), mig(C, A), mig(D, C)])
    assert info.value.heads == [B, D] and info.value.parent == A
    message = str(info.value)
    assert (
        f"the chain forks: migrations/{B}.yaml, migrations/{D}.yaml are separate heads after {A}" in message
    )
    assert "run `metaxy migrations generate --merge`" in message


def test_merge_migration_joins_two_heads_and_comes_after_both_parents():
    # A -> B -> D and A -> C, joined by E (parent: [D, C]); F follows the merge
    chain = MigrationChain([mig(F, E), mig(E, [D, C]), mig(D, B), mig(C, A), mig(B, A), mig(A)])
    assert chain.ids == [A, B, C, D, E, F]
    assert chain.head.migration_id == F and [m.migration_id for m in chain.heads] == [F]
    assert [m.migration_id for m in chain.parents_of(E)] == [D, C] and chain.get(E).is_merge
    # apply up to one branch leaves the other out; up to the merge takes both
    assert [m.migration_id for m in chain.upto(D)] == [A, B, D]
    assert [m.migration_id for m in chain.upto(E)] == [A, B, C, D, E]
    # what must be rolled back before C: the merge and what follows it, not the other branch
    assert [m.migration_id for m in chain.descendants(C)] == [E, F]


def test_forked_chain_loads_with_allow_forks_and_lists_its_heads():
    chain = MigrationChain([mig(A), mig(B, A), mig(C, A)], allow_forks=True)
    assert [m.migration_id for m in chain.heads] == [B, C]
    with pytest.raises(ForkError):
        _ = chain.head


def test_two_first_migrations_joined_by_a_merge_form_a_valid_chain():
    chain = MigrationChain([mig(A), mig(B), mig(C, [A, B])])
    assert chain.ids == [A, B, C] and chain.head.migration_id == C


def test_merge_parent_that_does_not_exist_names_the_file():
    with pytest.raises(MissingParentError, match=rf"migrations/{C}.yaml: parent 20240101_000000_gone"):
        MigrationChain([mig(A), mig(B, A), mig(C, [B, "20240101_000000_gone"])])


@pytest.mark.parametrize(
    ("parent", "expected"),
    [
        ([], "parent is an empty list"),
        ([A, A], "lists a migration twice"),
        ([A, "initial"], "a merge migration's parents must be migration ids"),
    ],
)
def test_bad_merge_parents_are_refused_at_load(parent: list[str], expected: str):
    with pytest.raises(ValueError, match=expected):
        mig(B, parent)


def test_one_element_parent_list_is_a_plain_parent():
    assert mig(B, [A]).parent == A and mig(B, [A]).parents == (A,)


def test_several_roots_are_refused_with_both_files_named():
    with pytest.raises(MultipleRootsError) as info:
        MigrationChain([mig(A), mig(B)])
    assert info.value.ids == [A, B]
    assert (
        f"several migrations start the chain (parent: initial): migrations/{A}.yaml, migrations/{B}.yaml"
        in str(info.value)
    )


def test_cycle_behind_a_valid_root_names_the_migrations_in_it():
    with pytest.raises(MigrationCycleError) as info:
        MigrationChain([mig(A), mig(B, C), mig(C, B)])
    assert info.value.ids == [B, C]
    assert f"migrations form a cycle through their parents: migrations/{B}.yaml, migrations/{C}.yaml" in str(
        info.value
    )


def test_chain_without_a_root_is_refused():
    with pytest.raises(
        NoRootError, match=r"no migration has `parent: initial` \(migrations/.*, migrations/.*\)"
    ):
        MigrationChain([mig(A, B), mig(B, A)])


def test_every_chain_error_is_a_chain_error():
    for cls in (
        DuplicateMigrationError,
        ForkError,
        MigrationCycleError,
        MissingParentError,
        MultipleRootsError,
        NoRootError,
    ):
        assert issubclass(cls, ChainError)
