"""The webhook settings, shown as a whole (a log line, an assertion, a debugger), never show
the secret the signatures are made with; its URLs are shown as ``LEDGER_WEBHOOK_URL`` gave
them (checked at start: ``api.webhooks.check_url``)."""

from __future__ import annotations

from pydantic import SecretStr

from api.config import Config
from api.webhooks import WebhookSettings

SECRET = "whsec-never-shown-7c1d"


def test_the_settings_made_from_the_configuration_never_show_the_secret() -> None:
    config = Config(webhook_url="https://mailer.example/hooks", webhook_secret=SecretStr(SECRET))
    hooks = WebhookSettings.from_config(config)
    assert hooks.secret == SECRET
    for shown in (repr(hooks), str(hooks), f"{hooks}", f"{hooks!r}"):
        assert SECRET not in shown, shown
        assert "https://mailer.example/hooks" in shown
