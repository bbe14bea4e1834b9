"""One rule for every condition: its transition time moves only when its status does."""

from driftline_operator.api.status import Condition, condition, upsert_condition


def test_a_condition_keeps_its_transition_time_while_its_status_holds():
    first = upsert_condition([], condition("Ready", "False", reason="A"), now="t1")
    same = upsert_condition(first, condition("Ready", "False", reason="B", message="m"), now="t2")
    flipped = upsert_condition(same, condition("Ready", "True", reason="C"), now="t3")
    assert [c["lastTransitionTime"] for c in (first[0], same[0], flipped[0])] == ["t1", "t1", "t3"]
    assert same[0]["reason"] == "B" and same[0]["message"] == "m"


def test_upserting_one_condition_keeps_the_others():
    conditions = [{"type": "SLOsMet", "status": "True", "reason": "Met", "message": ""}]
    result = upsert_condition(conditions, condition("Ready", "True", reason="R"), now="t")
    assert [c["type"] for c in result] == ["SLOsMet", "Ready"]


def test_the_analysis_and_the_status_writer_share_the_rule():
    before = Condition(
        type="DriftDetected", status="False", reason="NoDrift", last_transition_time="t1"
    )
    held = condition("DriftDetected", "False", reason="NoDrift", previous=before, now="t2")
    moved = condition("DriftDetected", "True", reason="DriftDetected", previous=before, now="t2")
    assert (held.last_transition_time, moved.last_transition_time) == ("t1", "t2")
