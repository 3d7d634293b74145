from redis_tasks.compat import TaskResultStatus
from tests import tasks
from tests.helpers import burst


def test_readme_example_runs() -> None:
    result = tasks.calculate_meaning_of_life.enqueue()
    other = tasks.nudge_nudge_wink_wink.enqueue()
    assert result.status == TaskResultStatus.READY
    burst()
    result.refresh()
    other.refresh()
    assert result.return_value == 42
    assert other.return_value == ["say", "no", "more"]
