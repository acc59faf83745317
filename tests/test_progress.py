"""The plain progress line printed off a terminal (seqmodels.progress), on a fake clock."""

import io

import pytest

from seqmodels.progress import ProgressLine, RowFiles, duration


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_line_says_rows_percent_rate_and_eta_at_most_every_interval(clock):
    stream = io.StringIO()
    line = ProgressLine("infer", total=1_000_000, every_s=3, stream=stream, clock=clock)
    clock.now += 2.9
    assert line.update(100_000) is None  # not before the interval: a short run prints nothing
    clock.now += 0.1
    assert line.update(120_000) == "infer: 120,000/1,000,000 rows (12%), 40,000 rows/s, ETA 22 s"
    clock.now += 2
    assert line.update(200_000) is None  # the last line was 2 s ago
    clock.now += 1
    # 200,000 rows in the 3.1 s since the first rows were seen
    assert line.update(300_000) == "infer: 300,000/1,000,000 rows (30%), 64,516 rows/s, ETA 11 s"
    assert stream.getvalue().splitlines() == [
        "infer: 120,000/1,000,000 rows (12%), 40,000 rows/s, ETA 22 s",
        "infer: 300,000/1,000,000 rows (30%), 64,516 rows/s, ETA 11 s"]


def test_the_rate_leaves_out_the_start_up_once_rows_have_come_for_an_interval(clock):
    """10 s of start-up, then 1,000 rows/s: the rate since the first rows, not 500 rows/s."""
    line = ProgressLine("infer", total=100_000, every_s=10, stream=io.StringIO(), clock=clock)
    clock.now += 10
    assert line.update(0) is None  # starting
    clock.now += 10
    assert line.update(10_000) == "infer: 10,000/100,000 rows (10%), 500 rows/s, ETA 3 min 00 s"
    clock.now += 10
    assert line.update(20_000) == "infer: 20,000/100,000 rows (20%), 1,000 rows/s, ETA 1 min 20 s"


def test_nothing_is_printed_while_no_row_is_done(clock):
    stream = io.StringIO()
    line = ProgressLine("infer", total=10, every_s=1, stream=stream, clock=clock)
    clock.now += 5
    assert line.update(0) is None
    assert stream.getvalue() == ""
    clock.now += 5
    assert line.update(5) == "infer: 5/10 rows (50%), 0 rows/s, ETA 10 s"


def test_without_a_total_the_line_has_the_count_and_the_rate(clock):
    line = ProgressLine("score", total=None, every_s=10, stream=io.StringIO(), clock=clock)
    clock.now += 10
    assert line.update(5_000) == "score: 5,000 rows, 500 rows/s"


def test_done_is_capped_at_the_total_and_has_no_eta(clock):
    line = ProgressLine("infer", total=200, every_s=1, stream=io.StringIO(), clock=clock)
    clock.now += 2
    assert line.update(250) == "infer: 200/200 rows (100%), 125 rows/s"


def test_the_line_goes_to_stderr_by_default(clock, capsys):
    line = ProgressLine("infer", total=4, every_s=1, clock=clock)
    clock.now += 1
    line.update(2)
    captured = capsys.readouterr()
    assert captured.err == "infer: 2/4 rows (50%), 2 rows/s, ETA 1 s\n"
    assert captured.out == ""


def test_the_default_interval_is_ten_seconds(clock):
    line = ProgressLine("infer", total=None, stream=io.StringIO(), clock=clock)
    clock.now += 9.9
    assert line.update(1) is None
    clock.now += 0.1
    assert line.update(1) is not None


def test_a_non_positive_interval_is_refused():
    with pytest.raises(ValueError, match="every_s must be > 0"):
        ProgressLine("infer", total=1, every_s=0)


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0 s"), (22.2, "22 s"), (59.6, "1 min 00 s"),
                                               (185, "3 min 05 s"), (7620, "2 h 07 min")])
def test_durations_read_as_a_person_reads_an_eta(seconds, text):
    assert duration(seconds) == text


def test_row_files_sum_each_writers_running_count(tmp_path):
    rows = RowFiles(tmp_path)
    first, second = rows.writer("part-00000"), rows.writer("part-00001")
    assert rows.total() == 0
    first(3)
    second(4)
    first(5)
    assert rows.total() == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-00000.rows", "part-00001.rows"]


def test_a_retried_writer_counts_its_rows_once(tmp_path):
    rows = RowFiles(tmp_path)
    rows.writer("part-00000")(7)
    rows.writer("part-00000")(7)  # the task again, from its first block
    assert rows.total() == 7
