"""Templates: a subject and a body per name and locale, rendered with Jinja2.

Each template renders twice: as plain text, and as HTML with autoescaping, so a parameter such as
``<b>`` reaches HTML channels (Telegram's HTML mode, e-mail) as text, never as markup. A locale
without the template falls back to ``en``, then to the notification's own subject and body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import escape

from botcriptofy import Notification

# ruff: noqa: E501 - template text reads better unbroken

LOCALES = ("pt-BR", "en")

BUILTIN: dict[str, dict[str, tuple[str, str]]] = {
    "pt-BR": {
        "billing.payment_failed": (
            "Falha no pagamento da fatura {{ invoice_id }}",
            "O pagamento de {{ amount }} do cliente {{ tenant_id }} falhou (tentativa {{ attempt_count }})."
            "{% if final %} Não haverá nova tentativa.{% endif %}",
        ),
        "billing.quota_warning": (
            "Cota {{ quota }} em {{ percent }} %",
            "O uso de {{ quota }} chegou a {{ used }} de {{ limit }} no plano {{ plan }}."
            "{% if upgrade_to %} O plano {{ upgrade_to }} amplia esse limite.{% endif %}",
        ),
        "billing.quota_exhausted": (
            "Cota {{ quota }} esgotada",
            "O limite de {{ quota }} ({{ limit }}) do plano {{ plan }} foi atingido.{% if upgrade_to %} O plano {{ upgrade_to }} amplia esse limite.{% endif %}",
        ),
        "billing.trial_ending": ("Seu período de teste termina em breve", "O teste do plano {{ plan }} termina em {{ trial_end }}."),
        "auth.account_locked": (
            "Conta bloqueada temporariamente",
            "A conta {{ email }} foi bloqueada após {{ failures }} tentativas de login falhas (IP {{ ip }}) até {{ locked_until }}.",
        ),
        "auth.new_device": (
            "Novo acesso à sua conta",
            "Houve um login na sua conta a partir do endereço {{ ip }} ({{ device }}). Se não foi você, troque sua senha.",
        ),
        "auth.verify_email": (
            "Confirme seu endereço de e-mail",
            "Confirme que este endereço é seu{% if link %}: {{ link }}{% else %} com o código {{ token }} ({{ api }}){% endif %}"
            "\nO link vale até {{ expires_at }} e funciona uma vez. Se você não criou uma conta, ignore esta mensagem.",
        ),
        "auth.password_reset": (
            "Redefinição de senha",
            "Pediram a redefinição da senha da conta que usa este endereço. Para escolher uma nova"
            "{% if link %}: {{ link }}{% else %}, use o código {{ token }} ({{ api }}){% endif %}"
            "\nO link vale até {{ expires_at }} e funciona uma vez; ao usá-lo, todas as sessões da conta são encerradas. "
            "Se não foi você, ignore esta mensagem.",
        ),
        "auth.email_change_confirm": (
            "Confirme seu novo endereço de e-mail",
            "Para mudar sua conta para este endereço, confirme"
            "{% if link %}: {{ link }}{% else %} com o código {{ token }} ({{ api }}){% endif %}"
            "\nO link vale até {{ expires_at }}. Se você não pediu essa mudança, ignore esta mensagem.",
        ),
        "auth.email_change_notice": (
            "O e-mail da sua conta está sendo alterado",
            "Pediram a mudança do e-mail da sua conta para {{ new_email }}. Para confirmar"
            "{% if link %}: {{ link }}{% else %}, use o código {{ token }} ({{ api }}){% endif %}"
            "\nSe não foi você, cancele com o mesmo código em POST /v1/auth/email/change/cancel: a mudança é descartada e "
            "todas as sessões da conta são encerradas. Vale até {{ expires_at }}.",
        ),
        "auth.refresh_token_reused": (
            "Reuso de token de sessão detectado",
            "Um token de sessão já usado foi apresentado para o usuário {{ user_id }} (IP {{ ip }}); a sessão foi revogada.",
        ),
        "digest": ("{{ count }} notificações", "{% for subject in subjects %}• {{ subject }}\n{% endfor %}"),
        "webhooks.endpoint_disabled": (
            "Webhook desativado",
            "O endpoint {{ url }} falhou por tempo demais e foi desativado. Último erro: {{ error }}.",
        ),
    },
    "en": {
        "billing.payment_failed": (
            "Payment failed for invoice {{ invoice_id }}",
            "The payment of {{ amount }} by customer {{ tenant_id }} failed (attempt {{ attempt_count }}).{% if final %} It will not be retried.{% endif %}",
        ),
        "billing.quota_warning": (
            "Quota {{ quota }} at {{ percent }} %",
            "{{ quota }} usage reached {{ used }} of {{ limit }} on the {{ plan }} plan.{% if upgrade_to %} The {{ upgrade_to }} plan lifts it.{% endif %}",
        ),
        "billing.quota_exhausted": (
            "Quota {{ quota }} used up",
            "The {{ quota }} limit ({{ limit }}) of the {{ plan }} plan is reached.{% if upgrade_to %} The {{ upgrade_to }} plan lifts it.{% endif %}",
        ),
        "billing.trial_ending": ("Your trial ends soon", "The trial of the {{ plan }} plan ends on {{ trial_end }}."),
        "auth.account_locked": (
            "Account locked for a while",
            "The account {{ email }} was locked after {{ failures }} failed logins (IP {{ ip }}) until {{ locked_until }}.",
        ),
        "auth.new_device": (
            "New sign-in to your account",
            "Your account was signed in from the address {{ ip }} ({{ device }}). If it was not you, change your password.",
        ),
        "auth.verify_email": (
            "Confirm your e-mail address",
            "Confirm that this address is yours{% if link %}: {{ link }}{% else %} with the code {{ token }} ({{ api }}){% endif %}"
            "\nThe link is valid until {{ expires_at }} and works once. If you did not create an account, ignore this message.",
        ),
        "auth.password_reset": (
            "Reset your password",
            "Someone asked to reset the password of the account that uses this address. To choose a new one"
            "{% if link %}: {{ link }}{% else %}, use the code {{ token }} ({{ api }}){% endif %}"
            "\nThe link is valid until {{ expires_at }} and works once; using it ends every session of the account. "
            "If it was not you, ignore this message.",
        ),
        "auth.email_change_confirm": (
            "Confirm your new e-mail address",
            "To move your account to this address, confirm"
            "{% if link %}: {{ link }}{% else %} with the code {{ token }} ({{ api }}){% endif %}"
            "\nThe link is valid until {{ expires_at }}. If you did not ask for this change, ignore this message.",
        ),
        "auth.email_change_notice": (
            "Your account's e-mail address is being changed",
            "A change of your account's e-mail address to {{ new_email }} was requested. To confirm it"
            "{% if link %}: {{ link }}{% else %}, use the code {{ token }} ({{ api }}){% endif %}"
            "\nIf it was not you, cancel it with the same code at POST /v1/auth/email/change/cancel: the change is dropped and "
            "every session of the account ends. Valid until {{ expires_at }}.",
        ),
        "auth.refresh_token_reused": (
            "Session token reuse detected",
            "An already used session token was presented for user {{ user_id }} (IP {{ ip }}); the session was revoked.",
        ),
        "digest": ("{{ count }} notifications", "{% for subject in subjects %}• {{ subject }}\n{% endfor %}"),
        "webhooks.endpoint_disabled": (
            "Webhook disabled",
            "The endpoint {{ url }} failed for too long and was disabled. Last error: {{ error }}.",
        ),
    },
}


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str


class Templates:
    """Render notifications per locale; sandboxed Jinja2, strict about missing parameters."""

    def __init__(self, extra: Mapping[str, Mapping[str, tuple[str, str]]] | None = None) -> None:
        self._catalogue: dict[str, dict[str, tuple[str, str]]] = {locale: dict(BUILTIN.get(locale, {})) for locale in LOCALES}
        for locale, templates in (extra or {}).items():
            self._catalogue.setdefault(locale, {}).update(templates)
        self._text = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined, keep_trailing_newline=False)
        self._html = SandboxedEnvironment(autoescape=True, undefined=StrictUndefined, keep_trailing_newline=False)

    def knows(self, name: str) -> bool:
        return any(name in templates for templates in self._catalogue.values())

    def render(self, notification: Notification, locale: str, extra: Mapping[str, Any] | None = None) -> Rendered:
        params = {**notification.params, **(extra or {})}
        name = notification.template
        if name is not None:
            found = self._catalogue.get(locale, {}).get(name) or self._catalogue["en"].get(name)
            if found is not None:
                subject, body = found
                return Rendered(
                    subject=self._text.from_string(subject).render(params).strip(),
                    text=self._text.from_string(body).render(params).strip(),
                    html=self._html.from_string(body).render(params).strip(),
                )
        return Rendered(subject=notification.subject, text=notification.body, html=str(escape(notification.body)))
