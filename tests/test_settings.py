"""Bad settings: one clear line naming the setting, exit status 2, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.core.errors import SettingsError
from backend.core.receipt_secret import load_receipt_secret
from backend.core.settings import Settings
from bot.cli import main
from bot.cli.root_secret import load_root_secret

HOTLINE = str(Path(sys.executable).parent / "hotline")


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    return subprocess.run(
        [HOTLINE, *args],
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """This process's environment as `_run` gives a `hotline` process: no HOTLINE_* but `env`."""
    for name in [k for k in os.environ if k.startswith("HOTLINE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("HOTLINE_DATABASE_URL", "mysql://db.example/hotline"),
        ("HOTLINE_DATABASE_URL", "postgresql://host:notaport/db"),
        ("HOTLINE_REDIS_URL", "http://127.0.0.1:6379"),
        ("HOTLINE_TELEGRAM_BASE_URL", "ftp://bots.example/bot"),
        ("HOTLINE_TELEGRAM_WEBHOOK_URL", "http://insecure.example/hook"),
        ("HOTLINE_TELEGRAM_TOKEN", "not a token"),
        ("HOTLINE_HTTP_PORT", "eighty"),
        ("HOTLINE_HTTP_PORT", "70000"),
        ("HOTLINE_FLOWS_DIR", "/nonexistent/flows"),
        ("HOTLINE_KDF_MEMORY_KIB", "1"),
        ("HOTLINE_BOT_SECRET", "short"),
        ("HOTLINE_RECEIPT_SECRET", "short"),
        ("HOTLINE_FIRST_START", "sometimes"),
        ("HOTLINE_TELEGRAM_POLL_LEASE_S", "1"),
        ("HOTLINE_REDIS_SENTINELS", "10.0.0.5"),
        ("HOTLINE_REDIS_SENTINELS", "10.0.0.5:26379,:1"),
        ("HOTLINE_REDIS_SENTINEL_SERVICE", "two words"),
    ],
)
def test_each_bad_setting_is_one_line_and_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    setting: str,
    value: str,
) -> None:
    """`hotline`'s own `main`, in this process (a `hotline` process per setting cost a second
    or more each; the process's exit status is `main`'s, shown by the tests below)."""
    _environment(monkeypatch, {"HOTLINE_DATA_DIR": str(tmp_path), setting: value})
    assert main(["up"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"hotline: {setting}:")
    assert "Traceback" not in err


def test_unwritable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = _run({"HOTLINE_DATA_DIR": str(blocker / "data")}, "up")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("hotline: HOTLINE_DATA_DIR:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_read_only_data_dir(tmp_path: Path) -> None:
    # Root ignores directory permissions, so a read-only bind is emulated with a full path.
    data = tmp_path / "ro"
    data.mkdir()
    data.chmod(0o500)
    try:
        # As root permissions do not bind; a path under /proc is unwritable for everyone.
        target = Path("/proc/self/hotline-data") if os.access(data, os.W_OK) else data
        result = _run({"HOTLINE_DATA_DIR": str(target)}, "up")
    finally:
        data.chmod(0o700)
    assert result.returncode == 2
    assert result.stderr.startswith("hotline: HOTLINE_DATA_DIR:")


def test_taken_port(tmp_path: Path, taken_port: int) -> None:
    result = _run({"HOTLINE_DATA_DIR": str(tmp_path), "HOTLINE_HTTP_PORT": str(taken_port)}, "up")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"hotline: HOTLINE_HTTP_PORT: cannot listen on 127.0.0.1:{taken_port} "
        "(Address already in use)"
    )


def test_unreachable_redis(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = _run(
        {
            "HOTLINE_DATA_DIR": str(tmp_path),
            "HOTLINE_HTTP_PORT": "0",
            "HOTLINE_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        },
        "up",
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("hotline: HOTLINE_REDIS_URL:")
    assert "Traceback" not in result.stderr


def test_the_stream_block_is_a_second_unless_set(tmp_path: Path) -> None:
    assert Settings.from_env({"HOTLINE_DATA_DIR": str(tmp_path)}).stream_block_ms == 1000
    quick = Settings.from_env({"HOTLINE_DATA_DIR": str(tmp_path), "HOTLINE_STREAM_BLOCK_MS": "50"})
    assert quick.stream_block_ms == 50
    with pytest.raises(SettingsError, match=r"^HOTLINE_STREAM_BLOCK_MS:"):
        Settings.from_env({"HOTLINE_DATA_DIR": str(tmp_path), "HOTLINE_STREAM_BLOCK_MS": "0"})


def test_the_web_chats_long_poll_waits_20_s_unless_set(tmp_path: Path) -> None:
    assert Settings.from_env({"HOTLINE_DATA_DIR": str(tmp_path)}).webchat_poll_wait_s == 20
    env = {"HOTLINE_DATA_DIR": str(tmp_path), "HOTLINE_WEBCHAT_POLL_WAIT_S": "3"}
    assert Settings.from_env(env).webchat_poll_wait_s == 3
    with pytest.raises(SettingsError, match=r"^HOTLINE_WEBCHAT_POLL_WAIT_S:"):
        Settings.from_env(env | {"HOTLINE_WEBCHAT_POLL_WAIT_S": "51"})


def test_settings_are_frozen_and_hide_secrets(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "HOTLINE_DATA_DIR": str(tmp_path),
            "HOTLINE_TELEGRAM_TOKEN": "123:SECRET-TOKEN",
            "HOTLINE_DATABASE_URL": "postgresql://user:PASSWORD@db/hotline",
        }
    )
    assert "SECRET-TOKEN" not in repr(settings)
    assert "PASSWORD" not in repr(settings)
    with pytest.raises(AttributeError):
        settings.http_port = 1  # type: ignore[misc]  # the frozen assignment is what is tested


def test_defaults(tmp_path: Path) -> None:
    settings = Settings.from_env({"HOTLINE_DATA_DIR": str(tmp_path)})
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8080)
    assert settings.database_url == f"sqlite:///{tmp_path.resolve() / 'hotline.sqlite3'}"
    assert settings.embedded_redis
    assert (settings.flows_dir / "report.flow.yaml").is_file()


def test_from_env_raises_typed_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^HOTLINE_HTTP_PORT: -1 is outside"):
        Settings.from_env({"HOTLINE_DATA_DIR": str(tmp_path), "HOTLINE_HTTP_PORT": "-1"})


def test_retention_per_status(tmp_path: Path) -> None:
    default = Settings.from_env({"HOTLINE_DATA_DIR": str(tmp_path)}).retention
    assert default.by_status() == {"closed": 90}, "open cases are never purged by default"
    settings = Settings.from_env(
        {
            "HOTLINE_DATA_DIR": str(tmp_path),
            "HOTLINE_RETENTION_QUEUED_DAYS": "400",
            "HOTLINE_RETENTION_CLOSED_DAYS": "0",
        }
    )
    assert settings.retention.by_status() == {"queued": 400}
    with pytest.raises(SettingsError, match=r"^HOTLINE_RETENTION_CLOSED_DAYS: -1 is outside"):
        Settings.from_env(
            {"HOTLINE_DATA_DIR": str(tmp_path), "HOTLINE_RETENTION_CLOSED_DAYS": "-1"}
        )


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["up"],
        ["backend"],
        ["bot"],
        ["keys", "init"],
        ["keys", "rotate"],
        ["counselor", "add"],
        ["audit", "verify"],
    ],
)
def test_help_on_every_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    _environment(monkeypatch, {})
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: hotline")
    assert "not implemented" not in out.lower()


def test_help_is_printed_by_the_installed_command() -> None:
    result = _run({}, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: hotline")


def test_require_totp_is_a_yes_or_no(tmp_path: Path) -> None:
    base = {"HOTLINE_DATA_DIR": str(tmp_path)}
    assert not Settings.from_env(base).login.require_totp
    assert Settings.from_env(base | {"HOTLINE_CONSOLE_REQUIRE_TOTP": "true"}).login.require_totp
    with pytest.raises(SettingsError, match=r"^HOTLINE_CONSOLE_REQUIRE_TOTP: must be true or"):
        Settings.from_env(base | {"HOTLINE_CONSOLE_REQUIRE_TOTP": "maybe"})


def test_sentinels_are_parsed_and_exclude_a_redis_url(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "HOTLINE_DATA_DIR": str(tmp_path),
            "HOTLINE_REDIS_SENTINELS": "10.0.0.5:26379, [::1]:26380",
            "HOTLINE_REDIS_SENTINEL_SERVICE": "centre-1",
        }
    )
    assert settings.redis_sentinels == (("10.0.0.5", 26379), ("::1", 26380))
    assert settings.redis_sentinel_service == "centre-1"
    assert not settings.embedded_redis
    with pytest.raises(SettingsError, match="HOTLINE_REDIS_SENTINELS: set either"):
        Settings.from_env(
            {
                "HOTLINE_DATA_DIR": str(tmp_path),
                "HOTLINE_REDIS_SENTINELS": "10.0.0.5:26379",
                "HOTLINE_REDIS_URL": "redis://10.0.0.5:6379/0",
            }
        )


def test_the_data_directorys_secrets_are_made_once_and_kept_private(tmp_path: Path) -> None:
    """Without HOTLINE_BOT_SECRET and HOTLINE_RECEIPT_SECRET, each is made on first use in the
    data directory (owner-only), read again by every later start, and two of them differ."""
    settings = Settings.from_env({"HOTLINE_DATA_DIR": str(tmp_path)})
    root, receipt = load_root_secret(settings), load_receipt_secret(settings)
    assert len(root) == len(receipt) == 32 and root != receipt
    assert (load_root_secret(settings), load_receipt_secret(settings)) == (root, receipt)
    for name in ("bot-secret", "receipt-secret"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
