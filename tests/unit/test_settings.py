"""service.operations.settings: defaults, environment overrides and loud failures."""

import os

import pytest

from service.operations.settings import Settings, SettingsError, get_settings, usable_cores


@pytest.fixture(autouse=True)
def fresh_settings():
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_defaults_serve_on_loopback_port_3000_with_one_single_threaded_worker_per_core():
    settings = Settings()
    assert (settings.host, settings.port, settings.worker_count) == ("127.0.0.1", 3000, usable_cores())
    assert settings.session_threads == 1
    assert settings.model_tag("digits") == "digits:latest"


def test_session_threads_share_the_cores_between_workers(monkeypatch):
    monkeypatch.setenv("MODEL_SERVER_WORKERS", "2")
    assert get_settings().session_threads == max(1, usable_cores() // 2)
    monkeypatch.setenv("MODEL_SERVER_ORT_THREADS", "3")
    get_settings.cache_clear()
    assert get_settings().session_threads == 3


def test_environment_overrides_each_setting(monkeypatch):
    monkeypatch.setenv("MODEL_SERVER_PORT", "8123")
    monkeypatch.setenv("MODEL_SERVER_PROVIDER", "cuda")
    monkeypatch.setenv("MODEL_SERVER_MAX_BATCH_WAIT_MS", "0.5")
    monkeypatch.setenv("MODEL_SERVER_MODEL_TAGS", '{"digits": "digits:abc123"}')
    settings = get_settings()
    assert settings.port == 8123 and settings.provider == "cuda" and settings.max_batch_wait_ms == 0.5
    assert settings.model_tag("digits") == "digits:abc123"


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MODEL_SERVER_PORT", "70000"), ("MODEL_SERVER_PROVIDER", "tpu"), ("MODEL_SERVER_WORKERS", "zero")],
)
def test_invalid_value_stops_start_up_naming_the_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        get_settings()


def test_oversubscribed_threads_are_warned_about(monkeypatch, caplog):
    monkeypatch.setenv("MODEL_SERVER_WORKERS", "4")
    monkeypatch.setenv("MODEL_SERVER_ORT_THREADS", "64")
    get_settings()
    assert "oversubscription" in caplog.text


def test_security_settings_are_off_by_default():
    settings = Settings()
    assert settings.api_key is None and settings.cors_origins == []
    assert "/readyz" in settings.auth_exempt_paths and "/digits/classify" not in settings.auth_exempt_paths


def test_api_key_and_cors_come_from_the_environment_and_the_key_never_prints(monkeypatch):
    monkeypatch.setenv("MODEL_SERVER_API_KEY", "a" * 32)
    monkeypatch.setenv("MODEL_SERVER_CORS_ORIGINS", '["https://app.example"]')
    settings = get_settings()
    assert settings.api_key.get_secret_value() == "a" * 32
    assert "a" * 32 not in repr(settings) and "a" * 32 not in str(settings)
    assert settings.cors_origins == ["https://app.example"]


def test_a_short_api_key_stops_start_up(monkeypatch):
    monkeypatch.setenv("MODEL_SERVER_API_KEY", "short")
    with pytest.raises(SettingsError, match="MODEL_SERVER_API_KEY.*16 characters"):
        get_settings()


def write_cgroup(root, files: dict[str, str]):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_usable_cores_respect_a_container_cpu_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    v2 = write_cgroup(tmp_path / "v2", {"cpu.max": "150000 100000\n"})  # docker --cpus 1.5
    assert usable_cores(v2) == min(affinity, 2)
    v1 = write_cgroup(tmp_path / "v1", {"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"})
    assert usable_cores(v1) == 1


def test_usable_cores_without_a_quota_are_the_affinity(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert usable_cores(write_cgroup(tmp_path / "v2", {"cpu.max": "max 100000\n"})) == affinity
    assert usable_cores(write_cgroup(tmp_path / "v1", {"cpu/cpu.cfs_quota_us": "-1\n",
                                                        "cpu/cpu.cfs_period_us": "100000\n"})) == affinity
    assert usable_cores(tmp_path / "none") == affinity


@pytest.mark.parametrize(("model", "variable", "value", "field"),
                         [("denoise", "MODEL_SERVER_MAX_DENOISE_PIXELS", "1000", "max_denoise_pixels"),
                          ("denoise", "MODEL_SERVER_DENOISE_SELF_ENSEMBLE", "false", "denoise_self_ensemble"),
                          ("digits", "MODEL_SERVER_MAX_IMAGE_PIXELS", "4096", "max_image_pixels"),
                          ("sentiment", "MODEL_SERVER_MAX_TEXT_CHARS", "99", "max_text_chars")])
def test_a_models_own_settings_live_with_it_under_their_old_names(monkeypatch, model, variable, value, field):
    from service.models.registry import built_in
    from service.operations.settings import load

    monkeypatch.setenv(variable, value)
    loaded = load(built_in(model).settings_class)
    assert str(getattr(loaded, field)).lower() == value
    assert field not in Settings.model_fields  # not a shared setting any more


def test_an_invalid_model_setting_stops_start_up_naming_the_variable(monkeypatch):
    from service.models.registry import built_in
    from service.operations.settings import load

    monkeypatch.setenv("MODEL_SERVER_MAX_DENOISE_PIXELS", "-5")
    with pytest.raises(SettingsError, match="MODEL_SERVER_MAX_DENOISE_PIXELS"):
        load(built_in("denoise").settings_class)


def test_every_setting_is_in_the_readme_configuration_table():
    from pathlib import Path

    from service.models.registry import built_in_models

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    classes = [Settings, *(model.settings_class for model in built_in_models() if model.settings_class)]
    for settings_class in classes:
        for field in settings_class.model_fields:
            assert f"| `MODEL_SERVER_{field.upper()}` |" in readme, f"MODEL_SERVER_{field.upper()} is not documented"
