"""What -t and a reload say about a config: no password of a conninfo in
any line they print or log."""

from conftest import EX_CONFIG, merge_config, render_config, wait_until


def wait_reloaded(d, mark):
    i = d.notify.wait_for(lambda line: line == "RELOADING=1", 10, "RELOADING=1",
                          since=mark, daemon=d)
    d.notify.wait_for(lambda line: line == "READY=1", 10, "READY=1 after RELOADING=1",
                      since=i + 1, daemon=d)


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
