"""What a report shows of a process's command line: enough to name it, never a credential."""

from __future__ import annotations

from ctxdoctor.runner.ptree import command_label


def test_program_and_first_arguments_with_paths_cut() -> None:
    assert command_label(["/usr/bin/python3", "/srv/app/server.py", "--workers", "4"]) == "python3 server.py --workers"
    assert command_label(["/venv/bin/gunicorn", "-w", "2", "app:app"]) == "gunicorn -w 2"


def test_option_values_given_with_equals_are_dropped() -> None:
    assert command_label(["node", "--api-key=s3cr3t", "app.js"]) == "node --api-key=… app.js"
    assert "s3cr3t" not in command_label(["celery", "--broker=redis://u:s3cr3t@h/0", "worker"])


def test_the_value_after_a_credential_option_is_hidden() -> None:
    label = command_label(["worker", "--password", "hunter2"])
    assert label == "worker --password …" and "hunter2" not in label
    assert command_label(["worker", "--token", "abc", "more"]) == "worker --token …"


def test_nothing_to_show() -> None:
    assert command_label([]) == ""
    assert len(command_label(["x" * 500])) == 120
