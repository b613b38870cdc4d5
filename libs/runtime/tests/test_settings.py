"""Settings every service shares."""

from __future__ import annotations

from pathlib import Path

from ehrflow_runtime.settings import CommonSettings


def test_the_redis_url_may_come_from_a_file(tmp_path: Path) -> None:
    """A Redis URL with a password is a secret: mounted as a file, never an environment variable."""
    (tmp_path / "url").write_text("rediss://:s3cret@redis.example:6380/0\n")
    settings = CommonSettings(organizations_file=tmp_path / "o.yaml", redis_url_file=tmp_path / "url")
    assert settings.redis_url.get_secret_value() == "rediss://:s3cret@redis.example:6380/0"
    assert "s3cret" not in repr(settings)
