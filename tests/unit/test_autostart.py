"""lxcsm autostart's choice of containers and their order (engine/cli/autostart.py), against
what lxc-autostart 5.0.2 -L printed for the same configs (tests/integration/test_autostart.py
compares the two tools on real LXCPATHs)."""

from __future__ import annotations

from lxcsm.engine.cli.autostart import NO_GROUP, Candidate, asked_groups, in_group, picked

CONTAINERS = [Candidate("a", 1, 5, 3, ()), Candidate("ab", 1, 5, 0, ()), Candidate("b", 1, 10, 0, ()),
              Candidate("c", 1, -2, 0, ("onboot",)), Candidate("d", 0, 0, 0, ()),
              Candidate("e", 1, 0, 0, ("web", "db")), Candidate("f", 1, 0, 0, ("webserver",)),
              Candidate("g", 0, 0, 0, ("onboot",))]   # in name order, as autostart lists them


def names(*groups: str, **options) -> list[str]:
    return [c.name for c in picked(CONTAINERS, asked_groups(list(groups)), **options)]


def test_by_default_only_the_containers_in_no_group_lower_order_first():
    assert asked_groups([]) == [NO_GROUP]
    assert names() == ["a", "ab", "b"]


def test_stopping_goes_in_the_exact_reverse():
    assert names(reverse=True) == ["b", "ab", "a"]
    assert names(all_groups=True, ignore_auto=True, reverse=True) == ["b", "ab", "a", "g", "f", "e", "d", "c"]


def test_all_ignores_groups_and_ignore_auto_ignores_lxc_start_auto():
    assert names("web", all_groups=True) == ["c", "e", "f", "a", "ab", "b"]
    assert names(ignore_auto=True) == ["d", "a", "ab", "b"]
    assert names("onboot", ignore_auto=True) == ["c", "g"]


def test_each_group_asked_for_is_a_pass_of_its_own():
    assert names("onboot,") == ["c", "a", "ab", "b"]
    assert names("web,onboot") == ["e", "c"]


def test_lxcs_prefix_rule_for_groups():
    assert in_group("webserver", ("web",)) and not in_group("web", ("webserver",))
    assert names("websrv") == ["e"]                       # group "web" is a prefix of "websrv"
    assert asked_groups(["web,webserver"]) == ["web"]    # "webserver" dropped as a duplicate of "web"
    assert names("webserver", "web") == ["e", "f"]
    assert asked_groups([",onboot"]) == [NO_GROUP]       # nothing survives after the empty name
    assert names("onboot,,web") == ["c", "a", "ab", "b"]


def test_list_prints_the_delay_as_lxc_reads_it_back():
    assert Candidate("x", 1, 0, 3000000000, ()).listed_delay == -1294967296
    assert Candidate("x", 1, 0, 7, ()).listed_delay == 7
