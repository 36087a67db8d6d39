"""How published events become audit entries: pseudonymous ids, no e-mail, the right actor."""

from __future__ import annotations

from botcriptofy_audit._recorders import MAPPERS


def test_a_failed_login_keeps_no_email():
    [record] = MAPPERS["auth.login_failed"](
        {"email": "ana@example.com", "user_id": "u1", "tenant_id": "t1", "reason": "bad_password", "failures": 2, "ip": "10.0.0.9"}
    )
    assert (record.action, record.outcome, record.subject, record.client_address) == ("auth.login", "failure", "u1", "10.0.0.9")
    assert "ana@example.com" not in repr(record)
    [unknown] = MAPPERS["auth.login_failed"](
        {"email": "who@example.com", "user_id": None, "tenant_id": None, "reason": "unknown_user", "failures": 1}
    )
    assert unknown.tenant_id is None and unknown.subject is None and "who@example.com" not in repr(unknown)


def test_staff_changes_name_who_made_them():
    [roles] = MAPPERS["auth.staff_roles_changed"]({"user_id": "u2", "tenant_id": "c", "roles": {"audit": "member"}, "changed_by": "admin"})
    assert (roles.actor_id, roles.actor_kind, roles.subject, roles.details["roles"]) == ("admin", "user", "u2", {"audit": "member"})
    [cli] = MAPPERS["auth.user_blocked"]({"user_id": "u3", "tenant_id": "t", "blocked": True, "reason": "fraud", "by": None})
    assert (cli.action, cli.actor_id, cli.actor_kind) == ("auth.user_blocked", "operator", "operator")


def test_a_rollback_records_the_plugins_it_switched():
    records = MAPPERS["kernel.config_applied"](
        {
            "version": 7,
            "generation": 9,
            "source": "api",
            "rollback_to": 5,
            "started": ["lgpd"],
            "stopped": ["cache"],
            "restarted": [],
            "reconfigured": ["auth"],
        }
    )
    assert [(r.action, r.target) for r in records] == [
        ("config.rolled_back", "config:7"),
        ("plugin.enabled", "plugin:lgpd"),
        ("plugin.disabled", "plugin:cache"),
    ]
    assert records[0].tenant_id is None and records[0].details["reconfigured"] == ["auth"]
