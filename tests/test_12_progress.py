"""progress.py: the one progress bar; it never changes what a loop sees and stays off stdout."""

from __future__ import annotations

from avalanche_hpc.progress import progress_bar, track


def test_track_yields_every_item_with_or_without_a_bar(capsys):
    items = list(range(7))
    assert list(track(iter(items), "count", total=7)) == items
    assert list(track(items, "count", enabled=False)) == items
    assert capsys.readouterr().out == ""  # bars go to stderr


def test_progress_bar_counts_and_shows_the_item_at_hand(capsys):
    with progress_bar(transient=False) as bar:
        tid = bar.add_task("preprocess", total=3, detail="")
        for key in ("a", "b", "c"):
            bar.update(tid, detail=key)
            bar.advance(tid)
        task = bar.tasks[0]
    assert task.completed == 3 and task.finished and task.fields["detail"] == "c"
    err = capsys.readouterr().err
    assert "preprocess" in err and "3/3" in err
    with progress_bar(enabled=False) as off:
        off.add_task("merge", total=1)  # no 'detail' field: the column shows nothing
        off.advance(off.tasks[0].id)
