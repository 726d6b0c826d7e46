"""What -t and a reload make of a config: no password of a conninfo in
any line they print or log; a file cut short or emptied is not taken for
a change; a change of handler or server is said loudly."""

from conftest import (EX_CONFIG, EX_OK, exec_handler, merge_config, read_lines, render_config,
                      wait_reloaded, wait_until, write_script)


BAD_CONNINFOS = [
    "postgresql://app:S3cretPW@[::1/db",
    "postgresql://app:S3cretPW@h/db?bogus=1",
    "host=h password='S3cretPW' nonsense",
]


def test_check_config_hides_conninfo_passwords(run_bin, tmp_path):
    for i, conninfo in enumerate(BAD_CONNINFOS):
        path = tmp_path / f"bad{i}.conf"
        path.write_text(render_config({"postgres": {"conninfo": conninfo}}))
        res = run_bin("-t", "-c", str(path))
        assert res.returncode == EX_CONFIG, res
        assert "postgres.conninfo" in res.stderr, res.stderr
        assert "S3cretPW" not in res.stdout + res.stderr, res.stderr
    res = run_bin("-t", "-c", str(tmp_path / "bad0.conf"))
    assert "postgresql://app:***@[::1/db" in res.stderr, res.stderr


def test_reload_log_hides_conninfo_password(tw, taskworkerd):
    d = taskworkerd()
    mark = d.reload(merge_config(d.config, {"postgres": {"conninfo": BAD_CONNINFOS[0]}}))
    wait_reloaded(d, mark)
    wait_until(lambda: "reload failed" in d.log(), 10, "the failed reload", daemon=d)
    assert "postgresql://app:***@[::1/db" in d.log()
    assert "S3cretPW" not in d.log()
    assert d.running()


def handler_writing(tmp_path):
    runs = tmp_path / "runs"
    script = write_script(tmp_path, "handler.sh", f'echo "$1" >> "{runs}"\n')
    return runs, exec_handler(script)


def test_reload_of_a_file_cut_before_handler_is_refused(tw, taskworkerd, tmp_path):
    """A file cut before handler: loaded alone it is valid (handler none),
    but on reload it would switch the tasks in flight to none: refused,
    loudly, and the exec handler keeps running them."""
    runs, handler = handler_writing(tmp_path)
    d = taskworkerd(handler=handler, worker={"delay_ms": 300})
    text = render_config(d.config)
    cut = text[:text.index("handler: {")]
    first = tw.insert(5)
    tw.push(first)
    wait_until(lambda: tw.r.zcard(tw.processing()) > 0, 10, "ids in flight", daemon=d)
    mark = d.reload(text=cut)
    wait_reloaded(d, mark)
    wait_until(lambda: "reload refused" in d.log(), 10, "the refusal", daemon=d)
    line = next(ln for ln in d.log_lines() if "reload refused" in ln)
    assert f"{d.config_path} has no handler, log sections" in line, line
    assert "keeping the running configuration" in line
    tw.wait_completed(first, 10, daemon=d)
    second = tw.insert(3)
    tw.push(second)
    tw.wait_completed(second, 10, daemon=d)
    assert sorted(read_lines(runs)) == sorted(str(i) for i in first + second)

    for text in ("", "# nothing but a comment\n"):
        mark = d.reload(text=text)
        wait_reloaded(d, mark)
    wait_until(lambda: sum("reload refused" in ln for ln in d.log_lines()) == 3, 10,
               "the empty files refused", daemon=d)
    assert "has no redis, postgres, worker, handler, log sections" in d.log()
    assert d.running()


def test_reload_that_adds_nothing_missing_is_applied(tw, taskworkerd, tmp_path):
    """The same sections (or more) reload as before; a change of handler
    type and of conninfo is logged as a warning, the password hidden."""
    runs, handler = handler_writing(tmp_path)
    d = taskworkerd()
    conninfo = d.config["postgres"]["conninfo"]
    mark = d.reload(merge_config(d.config, {
        "handler": handler, "retry": {"attempts": 2},
        "postgres": {"conninfo": conninfo + " password='S3cret PW'"}}))
    wait_reloaded(d, mark)
    wait_until(lambda: "reloaded:" in d.log(), 10, "the reload", daemon=d)
    log = d.log()
    assert "handler.type changes from none to exec" in log, log
    assert "postgres.conninfo changes from" in log and "password=***" in log, log
    assert "S3cret" not in log
    ids = tw.insert(2)
    tw.push(ids)
    tw.wait_completed(ids, 10, daemon=d)
    assert sorted(read_lines(runs)) == sorted(str(i) for i in ids)


def test_check_config_notes_the_sections_left_out(run_bin, tmp_path):
    path = tmp_path / "part.conf"
    path.write_text("redis: { port = 6379; };\nworker: { delay_ms = 1; };\n")
    res = run_bin("-t", "-c", str(path))
    assert res.returncode == EX_OK, res
    assert res.stdout == "configuration OK\n"
    assert res.stderr == (f"{path}: note: no postgres, handler, retry, metrics, log sections: "
                          "the defaults apply; a reload that leaves out a section the running "
                          "file has is refused\n"), res.stderr
